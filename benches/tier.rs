//! Tiered storage, measured against a real S3-compatible server (moto on 127.0.0.1), all parties
//! in one run, medians of `--reps`:
//!
//! - appends (100 B records, 500 a call, `put_records`) with tiering off and on: the tiering
//!   thread uploads while the appends run;
//! - the local disk a tiered shard uses while appending, against its local retention;
//! - a sequential read of segments that are only remote (page cache dropped, download cache
//!   empty), against a plain loop of `object_store` GETs of the same objects;
//! - reads of 100 records at random offsets of remote-only segments (a cache of two segments):
//!   range reads guided by the index, against downloading each segment whole;
//! - `restore` of the bucket into a new directory, against downloading the same objects with
//!   the same parallelism.
//!
//! `cargo bench --features s3 --bench tier -- [--mib 512] [--reps 3] [--dir-bucket /dev/shm]
//! [--moto-nice 19]` (`--dir-bucket`: also appends tiering into a directory there, the
//! uploader's cost alone; `--moto-nice`: moto's nice value, 19 to have it stand in for an S3
//! server elsewhere rather than compete with shardlog for the two cores)

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardlog::log::remote::{S3Bucket, S3BucketConfig};
use shardlog::restore::{restore, RestoreOptions};
use shardlog::{
    Bucket, PutRecord, ReadLimits, ShardId, ShardOptions, Store, StoreOptions, StreamConfig,
    TierConfig, TierOptions,
};

const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto on a free port, at nice `nice` (0: as shardlog; 19: it takes only CPU shardlog leaves,
/// standing in for an S3 server on other machines).
fn start_moto(nice: u64) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("nice")
        .args(["-n", &nice.to_string(), "moto_server"])
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server (pip install \"moto[server]\")");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto(child, port)
}

fn bucket(port: u16, name: &str) -> Arc<S3Bucket> {
    // Creating the bucket: a plain PUT.
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Arc::new(
        S3Bucket::new(&S3BucketConfig {
            bucket: name.into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            ..S3BucketConfig::default()
        })
        .unwrap(),
    )
}

fn drop_caches() -> bool {
    // Needs root; says whether it worked.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn options(tier: Option<TierConfig>) -> StoreOptions {
    StoreOptions {
        shard: ShardOptions {
            segment_bytes: SEGMENT_BYTES,
            ..ShardOptions::default()
        },
        retention_interval: None,
        tier,
        ..StoreOptions::default()
    }
}

fn local_segment_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk(&path)
                } else if path.extension().is_some_and(|x| x == "seg") {
                    e.metadata().map_or(0, |m| m.len())
                } else {
                    0
                }
            })
            .sum()
    }
    walk(&dir.join("streams"))
}

/// Appends `mib` MiB of 100 B records, at most `pace` MB/s if given; returns MB/s and the most
/// local segment bytes seen.
fn append(store: &Store, dir: &Path, mib: u64, pace: Option<f64>) -> (f64, u64) {
    let stream = store
        .create_stream("bench", StreamConfig::provisioned(1))
        .unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i:08}")).collect();
    let data = [0x42u8; 100];
    let batch: Vec<PutRecord<'_>> = keys.iter().map(|k| PutRecord::new(k, &data)).collect();
    let calls = mib * 1024 * 1024 / (500 * 100);
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, dir) = (Arc::clone(&peak), Arc::clone(&done), dir.to_path_buf());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(local_segment_bytes(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let start = Instant::now();
    for call in 0..calls {
        stream.put_records(&batch).unwrap();
        if let Some(mbps) = pace {
            let due = Duration::from_secs_f64((call + 1) as f64 * 0.05 / mbps);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let mb = (calls * 500 * 100) as f64 / 1e6;
    (mb / secs, peak.load(Ordering::Relaxed))
}

/// Reads the stream's one shard from the start; returns MB/s of data.
fn read_all(store: &Store) -> f64 {
    let stream = store.stream("bench").unwrap();
    let mut from = shardlog::Offset::new(0);
    let mut bytes = 0u64;
    let start = Instant::now();
    loop {
        let mut records = 0;
        let end = stream
            .visit(ShardId(0), from, ReadLimits::records(10_000), |r| {
                bytes += r.data.len() as u64;
                records += 1;
            })
            .unwrap_or_else(|e| panic!("read at {from}: {e}"));
        if records == 0 {
            break;
        }
        from = end.next;
    }
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// Reads 100 records at each of `reads` random offsets of the stream's one shard (below `end`);
/// returns the median milliseconds a read took and the bytes the cache downloaded per read.
fn random_reads(store: &Store, end: u64, reads: usize) -> (f64, f64) {
    let stream = store.stream("bench").unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut times = Vec::with_capacity(reads);
    let before = store.tier_status().cache.downloaded_bytes;
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = shardlog::Offset::new(x % end);
        let start = Instant::now();
        let read = stream
            .read(ShardId(0), from, ReadLimits::records(100))
            .unwrap_or_else(|e| panic!("read at {from}: {e}"));
        times.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(
            read.records.first().map(|r| r.sequence_number.offset()),
            Some(from)
        );
    }
    let downloaded = store.tier_status().cache.downloaded_bytes - before;
    (median(times), downloaded as f64 / reads as f64)
}

/// Keys of every object of the bucket's streams.
fn object_keys(bucket: &S3Bucket) -> Vec<String> {
    let objects = bucket.list("streams/").unwrap();
    objects.into_iter().map(|(key, _)| key).collect()
}

/// Seconds to `restore` the bucket into a new directory, and to download its objects with the
/// same parallelism then `sync` (the download first when `download_first`), with restore's
/// report.
fn restore_vs_download(
    bucket: &S3Bucket,
    root_dir: &str,
    download_first: bool,
) -> (f64, f64, shardlog::restore::RestoreReport) {
    let all = object_keys(bucket);
    let (mut restore_s, mut raw_s, mut report) = (0.0, 0.0, None);
    let order = if download_first { [1, 0] } else { [0, 1] };
    for step in order {
        let target = tempfile::tempdir_in(root_dir).unwrap();
        let start = Instant::now();
        if step == 0 {
            report = Some(
                restore(
                    bucket,
                    &target.path().join("restored"),
                    &RestoreOptions::default(),
                )
                .unwrap(),
            );
            restore_s = start.elapsed().as_secs_f64();
        } else {
            let queue = std::sync::Mutex::new(all.clone());
            std::thread::scope(|s| {
                for _ in 0..RestoreOptions::default().parallel_downloads {
                    s.spawn(|| loop {
                        let Some(key) = queue.lock().unwrap().pop() else {
                            return;
                        };
                        let path = target.path().join(key.replace('/', "_"));
                        bucket.get_to_file(&key, &path).unwrap();
                    });
                }
            });
            // On disk, as restore's files are (it fsyncs each): the same end state.
            let _ = std::process::Command::new("sync").status();
            raw_s = start.elapsed().as_secs_f64();
        }
    }
    (restore_s, raw_s, report.unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench` lists benchmarks: this one is a single program
    }
    let mib = arg("--mib", 512);
    let reps = arg("--reps", 3) as usize;
    let moto_nice = arg("--moto-nice", 0);
    let moto = start_moto(moto_nice);
    let root_dir = std::env::var("SHARDLOG_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let (mut off, mut on, mut peaks, mut reads, mut raw_gets, mut restores, mut raw_downloads) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut drained = vec![];
    let (mut window_ms, mut whole_ms, mut window_bytes, mut whole_bytes) =
        (vec![], vec![], vec![], vec![]);
    let mut on_dir = vec![];
    let dir_bucket: Option<String> = args
        .iter()
        .position(|a| a == "--dir-bucket")
        .and_then(|i| args.get(i + 1).cloned());
    let mut cold = false;
    for rep in 0..reps {
        // Tiering off, before the tiered run in even reps and after it in odd ones.
        let untiered = || {
            let dir = tempfile::tempdir_in(&root_dir).unwrap();
            let store = Store::open(dir.path(), options(None)).unwrap();
            append(&store, dir.path(), mib, None).0
        };
        if rep % 2 == 0 {
            off.push(untiered());
        }
        // Tiering on: local retention of a quarter of what is written.
        let name = format!("tier-bench-{rep}");
        let bucket = bucket(moto.1, &name);
        let dir = tempfile::tempdir_in(&root_dir).unwrap();
        let tier = TierConfig {
            bucket: bucket.clone(),
            options: TierOptions {
                local_retention_bytes: Some(mib * 1024 * 1024 / 4),
                local_retention: None,
                interval: Some(Duration::from_secs(1)),
                max_segment_age: Duration::from_secs(1),
                ..TierOptions::default()
            },
        };
        {
            let store = Store::open(dir.path(), options(Some(tier.clone()))).unwrap();
            let (rate, peak) = append(&store, dir.path(), mib, None);
            on.push(rate);
            peaks.push(peak as f64);
            // Drain: everything sealed goes up, and local copies past the retention go.
            std::thread::sleep(Duration::from_millis(1100));
            store.tier_now().unwrap();
            drained.push(local_segment_bytes(dir.path()) as f64);
        }
        if rep % 2 == 1 {
            off.push(untiered());
        }
        // Tiering on into a directory on tmpfs: the uploader's own cost, without moto's CPU.
        if let Some(root) = &dir_bucket {
            let bucket_dir = tempfile::tempdir_in(root).unwrap();
            let dir = tempfile::tempdir_in(&root_dir).unwrap();
            let store = Store::open(
                dir.path(),
                options(Some(TierConfig {
                    bucket: Arc::new(shardlog::DirBucket::new(bucket_dir.path()).unwrap()),
                    options: tier.options.clone(),
                })),
            )
            .unwrap();
            on_dir.push(append(&store, dir.path(), mib, None).0);
        }
        // Reads of remote-only segments: reopened with no local retention, so every sealed
        // segment is read from the bucket (page cache dropped, download cache empty).
        let remote_only = TierConfig {
            options: TierOptions {
                local_retention_bytes: Some(0),
                ..tier.options.clone()
            },
            ..tier.clone()
        };
        {
            let store = Store::open(dir.path(), options(Some(remote_only.clone()))).unwrap();
            store.tier_now().unwrap();
        }
        cold = drop_caches();
        {
            let store = Store::open(dir.path(), options(Some(remote_only.clone()))).unwrap();
            reads.push(read_all(&store));
        }
        // Random reads through a cache of two segments: range reads, then whole downloads
        // (each on a freshly opened store: an empty cache).
        let sealed_end = {
            let store = Store::open(dir.path(), options(Some(remote_only.clone()))).unwrap();
            let stream = store.stream("bench").unwrap();
            let end = *stream.shard_ends().unwrap().get(&0).unwrap();
            let status = store.tier_status();
            assert!(status.segments.remote_only > 2, "{status:?}");
            // Reads in the oldest three quarters are of sealed, remote-only segments.
            end * 3 / 4
        };
        for range_read_bytes in [TierOptions::default().range_read_bytes, u64::MAX] {
            let random = TierConfig {
                options: TierOptions {
                    cache_bytes: 2 * SEGMENT_BYTES,
                    range_read_bytes,
                    ..remote_only.options.clone()
                },
                ..remote_only.clone()
            };
            let store = Store::open(dir.path(), options(Some(random))).unwrap();
            let (ms, bytes) = random_reads(&store, sealed_end, 40);
            if range_read_bytes == u64::MAX {
                whole_ms.push(ms);
                whole_bytes.push(bytes);
            } else {
                window_ms.push(ms);
                window_bytes.push(bytes);
            }
        }
        // The same objects through plain GETs, one after another.
        let segments: Vec<(String, u64)> = bucket
            .list("streams/")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.ends_with(".seg"))
            .collect();
        let start = Instant::now();
        let mut got = 0u64;
        for (key, _) in &segments {
            got += bucket.get_bytes(key).unwrap().unwrap().len() as u64;
        }
        raw_gets.push(got as f64 / 1e6 / start.elapsed().as_secs_f64());
        // Restore against a parallel download of every object, in alternating order.
        let (restore_s, raw_s, report) =
            restore_vs_download(bucket.as_ref(), &root_dir, rep % 2 == 1);
        restores.push(restore_s);
        raw_downloads.push(raw_s);
        let all = object_keys(bucket.as_ref());
        eprintln!(
            "rep {rep}: append off {:.0} MB/s, on {:.0} MB/s (peak local {:.0} MiB, {:.0} MiB once uploads caught up); remote read {:.0} MB/s vs GET loop {:.0} MB/s; random read {:.1} ms ({:.0} KiB) vs whole segments {:.1} ms ({:.0} KiB); restore {:.2} s ({} segments, {:.0} MiB) vs raw download {:.2} s",
            off[rep],
            on[rep],
            peaks[rep] / 1048576.0,
            drained[rep] / 1048576.0,
            reads[rep],
            raw_gets[rep],
            window_ms[rep],
            window_bytes[rep] / 1024.0,
            whole_ms[rep],
            whole_bytes[rep] / 1024.0,
            restores[rep],
            report.segments,
            report.bytes as f64 / 1048576.0,
            raw_downloads[rep]
        );
        for key in all {
            let _ = bucket.delete(&key);
        }
    }
    // A sustained stream the uploads keep up with: the local disk holds about the local
    // retention plus the active segment plus what one tiering interval appends.
    let paced_mib = arg("--paced-mib", 2048);
    let pace = arg("--pace-mbps", 100) as f64;
    let retention_mib = arg("--paced-retention-mib", 512);
    let paced_peak = {
        let bucket = bucket(moto.1, "tier-bench-paced");
        let dir = tempfile::tempdir_in(&root_dir).unwrap();
        let store = Store::open(
            dir.path(),
            options(Some(TierConfig {
                bucket: bucket.clone(),
                options: TierOptions {
                    local_retention_bytes: Some(retention_mib * 1024 * 1024),
                    local_retention: None,
                    interval: Some(Duration::from_secs(1)),
                    ..TierOptions::default()
                },
            })),
        )
        .unwrap();
        let (rate, peak) = append(&store, dir.path(), paced_mib, Some(pace));
        eprintln!(
            "paced: {paced_mib} MiB at {rate:.0} MB/s, peak local {:.0} MiB",
            peak as f64 / 1048576.0
        );
        // Everything sealed goes up; then the whole bucket is restored.
        store.tier_now().unwrap();
        drop(store);
        let restored = restore_vs_download(bucket.as_ref(), &root_dir, false);
        eprintln!(
            "paced bucket: restore {:.1} s ({} segments, {:.0} MiB) vs raw download {:.1} s",
            restored.0,
            restored.2.segments,
            restored.2.bytes as f64 / 1048576.0,
            restored.1
        );
        for (key, _) in bucket.list("").unwrap() {
            let _ = bucket.delete(&key);
        }
        (peak, restored)
    };
    let (paced_peak, paced_restore) = paced_peak;
    println!("tiering, {mib} MiB of 100 B records per run, medians of {reps} (page cache dropped before remote reads: {cold}; moto at nice {moto_nice})");
    println!("| measure | result | baseline | ratio |");
    println!("|---|---:|---:|---:|");
    let (off, on) = (median(off), median(on));
    println!(
        "| append MB/s, tiering on vs off | {on:.0} | {off:.0} | {:.2}x |",
        on / off
    );
    if !on_dir.is_empty() {
        let on_dir = median(on_dir);
        println!(
            "| append MB/s, tiering on into a tmpfs directory vs off | {on_dir:.0} | {off:.0} | {:.2}x |",
            on_dir / off
        );
    }
    println!(
        "| peak local segment bytes, MiB (local retention {} MiB) | {:.0} | {} | {:.2}x |",
        mib / 4,
        median(peaks.clone()) / 1048576.0,
        mib / 4,
        median(peaks) / 1048576.0 / (mib / 4) as f64
    );
    println!(
        "| peak local segment bytes, MiB, {paced_mib} MiB appended at {pace} MB/s (local retention {retention_mib} MiB, {} MiB segments, 1 s rounds) | {:.0} | {retention_mib} | {:.2}x |",
        SEGMENT_BYTES >> 20,
        paced_peak as f64 / 1048576.0,
        paced_peak as f64 / 1048576.0 / retention_mib as f64
    );
    println!(
        "| local segment bytes once uploads caught up, MiB | {:.0} | {} | {:.2}x |",
        median(drained.clone()) / 1048576.0,
        mib / 4,
        median(drained) / 1048576.0 / (mib / 4) as f64
    );
    let (read, raw) = (median(reads), median(raw_gets));
    println!(
        "| sequential read of remote-only segments, MB/s vs plain GET loop | {read:.0} | {raw:.0} | {:.2}x |",
        read / raw
    );
    let (window, whole) = (median(window_ms), median(whole_ms));
    println!(
        "| read of 100 records at a random remote offset, ms: range reads vs whole segments ({} MiB cache) | {window:.1} | {whole:.1} | {:.2}x |",
        2 * (SEGMENT_BYTES >> 20),
        window / whole
    );
    println!(
        "| bytes downloaded per random read, KiB: range reads vs whole segments | {:.0} | {:.0} | {:.3}x |",
        median(window_bytes.clone()) / 1024.0,
        median(whole_bytes.clone()) / 1024.0,
        median(window_bytes) / median(whole_bytes)
    );
    println!(
        "| restore of the paced stream's bucket ({:.1} GiB), s vs raw parallel download then sync | {:.1} | {:.1} | {:.2}x |",
        paced_restore.2.bytes as f64 / 1073741824.0,
        paced_restore.0,
        paced_restore.1,
        paced_restore.0 / paced_restore.1
    );
    let (restore_s, raw_s) = (median(restores), median(raw_downloads));
    println!(
        "| restore, s vs raw parallel download then sync | {restore_s:.2} | {raw_s:.2} | {:.2}x |",
        restore_s / raw_s
    );
}
