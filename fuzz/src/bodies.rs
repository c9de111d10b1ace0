// Bodies of the fuzz targets: plain functions of arbitrary bytes, shared by the cargo-fuzz targets
// (fuzz/fuzz_targets) and by `cargo test` (tests/suite/fuzz_corpus.rs), which runs them over the
// committed seeds in fuzz/seeds. A panic anywhere is a finding: the engine must return errors,
// never panic, on any bytes from disk, and must only ever serve records whose checks passed.
//
// `unwrap` here is on the harness's own work (temporary directories, writing its inputs), never
// on what the engine does with them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use shardlog::log::format::{
    batch_record_len, decode_batch, decode_frame, encode_batch, encode_frame, encode_index_header,
    frame_len, peek_batch, peek_frame, FrameFields, IndexEntry, Layout, SegmentHeader,
    BATCH_OVERHEAD, SEGMENT_HEADER_LEN,
};
use shardlog::{
    Clock, ListShards, ManualClock, NewRecord, Offset, PutRecord, ReadLimits, Record, Shard,
    ShardFilter, ShardOptions, Start, Store, StoreOptions,
};

/// Records in the template shard.
const KNOWN: u64 = 300;
/// Arrival time of known record `i`: see [`arrival_of`].
const T0: i64 = 1_700_000_000_000;

fn known(i: u64) -> (Vec<u8>, Vec<u8>) {
    let key = format!("k{}", i % 7).into_bytes();
    let data = vec![i as u8; ((i * 37) % 300) as usize];
    (key, data)
}

/// Arrival time of known record `i`: that of the first record of its append.
fn arrival_of(i: u64) -> i64 {
    let mut first = 0;
    loop {
        let n = 1 + first % 4;
        if i < first + n {
            return T0 + first as i64;
        }
        first += n;
    }
}

fn options(segment_bytes: u64) -> ShardOptions {
    ShardOptions {
        segment_bytes,
        clock: Arc::new(ManualClock::new(T0 + 10_000)) as Arc<dyn Clock>,
        ..ShardOptions::default()
    }
}

/// A valid shard written once per process: the known records in 16 KiB segments, closed cleanly.
/// Returns its files (name, bytes), oldest segment first.
fn template() -> &'static Vec<(String, Vec<u8>)> {
    static TEMPLATE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let shard = Shard::open(
            dir.path(),
            ShardOptions {
                segment_bytes: 16 * 1024,
                clock: Arc::clone(&clock) as Arc<dyn Clock>,
                ..ShardOptions::default()
            },
        )
        .unwrap();
        // Appends of one to four records: batches of one to four. Every record of an append
        // shares its arrival time, so record i arrives at the time of the first of its append.
        let mut i = 0;
        while i < KNOWN {
            let n = (1 + i % 4).min(KNOWN - i);
            let owned: Vec<(Vec<u8>, Vec<u8>)> = (i..i + n).map(known).collect();
            let records: Vec<NewRecord<'_>> = owned
                .iter()
                .enumerate()
                .map(|(k, (key, data))| NewRecord {
                    partition_key: key,
                    explicit_hash_key: (k % 2 == 1).then_some(u128::from(i) + k as u128),
                    data,
                })
                .collect();
            clock.set(arrival_of(i));
            shard.append(&records).unwrap();
            i += n;
        }
        drop(shard);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name() != "LOCK")
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    })
}

fn segment_files() -> Vec<&'static (String, Vec<u8>)> {
    template()
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .collect()
}

fn write_template(dir: &Path) {
    for (name, bytes) in template() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Every record a shard serves from the start, stopping at the first error (damage is allowed to
/// be an error; it is not allowed to be a panic or wrong data).
fn read_all(shard: &Shard) -> Vec<Record> {
    let mut out = Vec::new();
    let mut cursor = Offset::new(0);
    while let Ok(batch) = shard.read(cursor, ReadLimits::default()) {
        if batch.records.is_empty() || batch.next_offset <= cursor {
            break;
        }
        cursor = batch.next_offset;
        out.extend(batch.records);
    }
    out
}

/// Served records come in offset order, and those that a valid file held match it exactly.
fn check_served(records: &[Record], trusted_below: u64) {
    for w in records.windows(2) {
        assert!(w[0].offset < w[1].offset, "offsets out of order");
    }
    for r in records.iter().filter(|r| r.offset.get() < trusted_below) {
        let (key, data) = known(r.offset.get());
        assert_eq!(&r.partition_key[..], &key[..], "key of {}", r.offset);
        assert_eq!(&r.data[..], &data[..], "data of {}", r.offset);
        assert_eq!(r.arrival_ms, arrival_of(r.offset.get()));
    }
}

/// How many known records lie in whole batches in the first `len` bytes of the first template
/// segment.
fn known_within(len: usize) -> u64 {
    template_records(&segment_files()[0].1)
        .iter()
        .take_while(|(_, batch)| batch.end <= len)
        .count() as u64
}

/// The first known record that arrived at or after `t`.
fn first_arriving(t: i64) -> u64 {
    (0..KNOWN).find(|&i| arrival_of(i) >= t).unwrap_or(KNOWN)
}

/// Arbitrary bytes as a segment file: alone, as the tail of a valid segment, or as an older
/// (sealed) segment with a newer one after it. Opening read-only changes no byte; opening for
/// writing recovers; neither panics, and every served record checks out.
pub fn segment(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let first = segment_files()[0];
    let mode = data.first().copied().unwrap_or(0) % 3;
    let rest = data.get(2..).unwrap_or(&[]);
    let (bytes, trusted) = match mode {
        0 => (data.to_vec(), 0),
        _ => {
            // A valid segment cut somewhere, then the fuzz bytes.
            let cut = usize::from(data.get(1).copied().unwrap_or(0)) * first.1.len() / 255;
            let cut = cut.max(SEGMENT_HEADER_LEN).min(first.1.len());
            let mut bytes = first.1[..cut].to_vec();
            bytes.extend_from_slice(rest);
            (bytes, known_within(cut))
        }
    };
    std::fs::write(dir.path().join(&first.0), &bytes).unwrap();
    if mode == 2 {
        // Make it an older segment: a newer, empty one follows far ahead.
        let header = SegmentHeader {
            version: shardlog::log::format::FORMAT_VERSION,
            base_offset: Offset::new(1_000_000),
            created_ms: T0,
            arrival_floor_ms: i64::MIN,
        };
        let mut newer = header.encode().to_vec();
        newer.resize(4096, 0);
        std::fs::write(dir.path().join("00000000000001000000.seg"), newer).unwrap();
    }
    if let Ok(shard) = Shard::open_read_only(dir.path(), options(64 * 1024)) {
        check_served(&read_all(&shard), trusted);
        let _ = shard.seek_time(T0 + 100);
    }
    let after: PathBuf = dir.path().join(&first.0);
    assert_eq!(
        std::fs::read(&after).unwrap(),
        bytes,
        "a read-only open changed the file"
    );
    if let Ok(shard) = Shard::open(dir.path(), options(64 * 1024)) {
        check_served(&read_all(&shard), trusted);
        let _ = shard.seek_time(T0 + 100);
        let next = shard.next_offset();
        if let Ok(a) = shard.append(&[NewRecord::new(b"new", b"after recovery")]) {
            assert_eq!(a.first, next, "an append continues where the shard ends");
            let one = ReadLimits {
                max_records: 1,
                max_bytes: usize::MAX,
            };
            let back = shard.read(a.first, one).expect("a fresh append reads back");
            assert_eq!(&back.records[0].data[..], b"after recovery");
        }
    }
}

/// Arbitrary bytes as the index file of a valid segment (the active one, or a sealed one): raw,
/// after a valid index header, or read as (offset, position, time) triples encoded as entries
/// with valid CRCs, which reach the checks behind the CRC. The index is a cache: whatever it
/// holds, reads and seeks return exactly the right records.
pub fn index(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    write_template(dir.path());
    let segments = segment_files();
    let mode = data.first().copied().unwrap_or(0);
    let (name, _) = if mode % 2 == 0 {
        segments[0]
    } else {
        segments[segments.len() - 1]
    };
    let base = Offset::new(name[..20].parse().unwrap());
    let mut bytes = Vec::new();
    let rest = data.get(1..).unwrap_or(&[]);
    if mode % 6 < 4 {
        bytes.extend_from_slice(&encode_index_header(base));
    }
    if mode % 6 < 2 {
        // Structured: plausible-looking entries with valid CRCs.
        for t in rest.chunks_exact(6) {
            let entry = IndexEntry {
                relative_offset: u32::from(u16::from_le_bytes([t[0], t[1]])),
                position: u32::from(u16::from_le_bytes([t[2], t[3]])),
                max_arrival_ms: T0 + i64::from(u16::from_le_bytes([t[4], t[5]])) - 1000,
            };
            bytes.extend_from_slice(&entry.encode());
        }
    } else {
        bytes.extend_from_slice(rest);
    }
    std::fs::write(dir.path().join(name.replace(".seg", ".idx")), &bytes).unwrap();
    for read_only in [true, false] {
        let shard = if read_only {
            Shard::open_read_only(dir.path(), options(16 * 1024))
        } else {
            Shard::open(dir.path(), options(16 * 1024))
        }
        .expect("a valid segment opens whatever its index holds");
        let one = ReadLimits {
            max_records: 1,
            max_bytes: usize::MAX,
        };
        for o in [0, 1, 57, 150, 151, KNOWN - 1] {
            let got = shard.read(Offset::new(o), one).expect("valid data reads");
            assert_eq!(got.records[0].offset, Offset::new(o));
            check_served(&got.records, KNOWN);
            assert_eq!(
                shard.seek_time(T0 + o as i64).unwrap(),
                Offset::new(first_arriving(T0 + o as i64))
            );
        }
        assert_eq!(read_all(&shard).len() as u64, KNOWN);
    }
}

/// Arbitrary bytes as a stream manifest: opening the store is an error or a working store, and
/// every operation on what opened works or fails cleanly.
pub fn manifest(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let stream_dir = dir.path().join("streams").join("s");
    std::fs::create_dir_all(stream_dir.join("shards")).unwrap();
    std::fs::write(stream_dir.join("stream.json"), data).unwrap();
    let options = StoreOptions {
        retention_interval: None,
        ..StoreOptions::default()
    };
    let Ok(store) = Store::open(dir.path(), options) else {
        return;
    };
    for name in store.list_streams() {
        let Ok(stream) = store.stream(&name) else {
            continue;
        };
        let description = stream.describe();
        let _ = stream.list_shards_page(ListShards::First(ShardFilter::AtTrimHorizon), 3);
        let put = stream.put_record(&PutRecord::new("key", b"value"));
        if let Some(shard) = description.shards.first() {
            if let Ok(it) = stream.shard_iterator(shard.shard_id, Start::TrimHorizon) {
                let _ = store.get_records(&it, 10);
            }
        }
        if put.is_ok() {
            let _ = stream.update_shard_count(description.open_shard_count.max(1) as u32);
            let _ = store.enforce_retention();
        }
    }
}

/// Arbitrary records: encoding then decoding gives them back exactly, as a version 2 frame each
/// and as one version 3 batch; and the raw bytes, decoded as a frame or a batch, are an error or
/// records whose CRC matched (iterating a batch's records never panics, whatever they hold).
pub fn frame(data: &[u8]) {
    let _ = decode_frame(data, 0);
    let _ = peek_frame(data, data.len() / 2);
    for at in [0, data.len() / 2] {
        let _ = peek_batch(data, at, Layout::CURRENT);
        if let Ok(batch) = decode_batch(data, at, Layout::CURRENT) {
            let _ = batch.check();
            for record in batch.records() {
                let Ok(record) = record else { break };
                let _ = record.hash_key();
            }
        }
    }
    let mut rest = data;
    let mut offset = 0u64;
    let mut owned = Vec::new();
    while rest.len() >= 3 {
        let key_len = 1 + usize::from(rest[0]) % 32;
        let data_len = usize::from(rest[1]) * 5;
        let payload: Vec<u8> = rest[2..]
            .iter()
            .copied()
            .cycle()
            .take(data_len + key_len)
            .collect();
        let (key, value) = payload.split_at(key_len);
        let fields = FrameFields {
            offset: Offset::new(offset),
            arrival_ms: i64::from(rest[2]) * 1_000_003 - 7,
            hash_key: u128::from(rest[0]) << 120 | u128::from(offset),
            partition_key: key,
            data: value,
        };
        let mut buf = vec![0u8; frame_len(key.len(), value.len())];
        encode_frame(&fields, &mut buf);
        let decoded = decode_frame(&buf, 0).expect("an encoded frame decodes");
        assert_eq!(decoded.offset, fields.offset);
        assert_eq!(decoded.arrival_ms, fields.arrival_ms);
        assert_eq!(decoded.hash_key, fields.hash_key);
        assert_eq!(decoded.partition_key, key);
        assert_eq!(decoded.data, value);
        assert_eq!(decoded.len, buf.len());
        let head = peek_frame(&buf, 0).expect("an encoded frame peeks");
        assert_eq!((head.len, head.offset), (buf.len(), fields.offset));
        owned.push((
            key.to_vec(),
            value.to_vec(),
            (rest[0] % 2 == 0).then_some(fields.hash_key),
        ));
        rest = &rest[3..];
        offset += 1;
    }
    if owned.is_empty() {
        return;
    }
    let records: Vec<NewRecord<'_>> = owned
        .iter()
        .map(|(key, value, explicit)| NewRecord {
            partition_key: key,
            explicit_hash_key: *explicit,
            data: value,
        })
        .collect();
    let len = BATCH_OVERHEAD + records.iter().map(batch_record_len).sum::<usize>();
    let mut buf = vec![0u8; len];
    let (base, arrival) = (Offset::new(1_000), i64::from(data[0]) - 100);
    encode_batch(base, arrival, &records, &mut buf, false);
    let batch = decode_batch(&buf, 0, Layout::CURRENT).expect("an encoded batch decodes");
    batch.check().expect("an encoded batch checks");
    assert_eq!(batch.head.len, len);
    assert_eq!(batch.head.count as usize, records.len());
    for (i, (got, want)) in batch.records().zip(&records).enumerate() {
        let got = got.expect("an encoded record decodes");
        assert_eq!(got.offset, Offset::new(1_000 + i as u64));
        assert_eq!(got.arrival_ms, arrival);
        assert_eq!(got.partition_key, want.partition_key);
        assert_eq!(got.data, want.data);
        assert_eq!(got.explicit_hash_key, want.explicit_hash_key);
    }
    // The last record's payload written apart from the rest encodes the same bytes.
    let last = records.last().expect("not empty").data;
    let mut split = vec![0u8; len - last.len()];
    encode_batch(base, arrival, &records, &mut split, true);
    split.extend_from_slice(last);
    assert_eq!(split, buf);
}

/// The records of a template segment file: (offset, byte range of its batch).
fn template_records(bytes: &[u8]) -> Vec<(u64, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(batch) = decode_batch(bytes, pos, Layout::CURRENT) {
        let range = pos..pos + batch.head.len;
        let first = batch.head.base_offset.get();
        out.extend((first..first + u64::from(batch.head.count)).map(|o| (o, range.clone())));
        pos += batch.head.len;
    }
    out
}

/// Arbitrary damage to a valid shard (bytes flipped, set or zeroed, files cut short or deleted),
/// then `repair --apply`: the shard opens for writing, verifies clean, serves only records that
/// check out, serves every record whose frame the damage left intact, and a second repair finds
/// nothing to do.
pub fn repair(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    write_template(dir.path());
    let names: Vec<&String> = template().iter().map(|(n, _)| n).collect();
    // Per file: byte ranges damaged; `usize::MAX` length marks a deleted file.
    let mut damaged: Vec<Vec<std::ops::Range<usize>>> = vec![Vec::new(); names.len()];
    for op in data.chunks_exact(6) {
        let i = usize::from(op[1]) % names.len();
        let path = dir.path().join(names[i]);
        let Ok(mut bytes) = std::fs::read(&path) else {
            continue; // deleted already
        };
        if bytes.is_empty() {
            continue;
        }
        let at = usize::from(u16::from_le_bytes([op[2], op[3]])) * bytes.len() / 65_536;
        let end = (at + usize::from(op[4]) + 1).min(bytes.len());
        match op[0] % 5 {
            0 => bytes[at..end].iter_mut().for_each(|b| *b ^= op[5] | 1),
            1 => bytes[at..end].fill(0),
            2 => bytes[at..end].fill(op[5]),
            3 => {
                bytes.truncate(at);
                damaged[i].push(at..usize::MAX);
                std::fs::write(&path, &bytes).unwrap();
                continue;
            }
            _ => {
                if op[5] % 4 == 0 {
                    std::fs::remove_file(&path).unwrap();
                    damaged[i].push(0..usize::MAX);
                }
                continue;
            }
        }
        damaged[i].push(at..end);
        std::fs::write(&path, &bytes).unwrap();
    }

    let plan = shardlog::log::repair::apply_repair(dir.path(), &Default::default(), T0 + 20_000)
        .expect("repair works on any damage");
    if std::env::var_os("SHARDLOG_FUZZ_TRACE").is_some() {
        eprintln!("damaged: {damaged:?} of {names:?}");
        for r in &plan.repairs {
            eprintln!("{r}");
        }
    }
    let shard = Shard::open(dir.path(), options(16 * 1024)).expect("a repaired shard opens");
    let problems = shardlog::log::shard::verify(dir.path()).expect("verify runs");
    assert!(problems.is_empty(), "not clean after repair: {problems:?}");
    let served = read_all(&shard);
    check_served(&served, u64::MAX);
    let served: std::collections::HashSet<u64> = served.iter().map(|r| r.offset.get()).collect();
    for (i, (name, bytes)) in template().iter().enumerate() {
        if !name.ends_with(".seg") {
            continue;
        }
        for (offset, range) in template_records(bytes) {
            let hit = damaged[i]
                .iter()
                .any(|d| d.start < range.end && range.start < d.end);
            assert!(
                hit || served.contains(&offset),
                "record {offset} in {name} was intact but is gone after repair"
            );
        }
    }
    drop(shard);
    let again = shardlog::log::repair::plan_repair(dir.path(), &Default::default()).expect("plan");
    assert!(
        again.repairs.is_empty(),
        "a second repair: {:?}",
        again.repairs
    );
}
