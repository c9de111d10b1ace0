//! Side-by-side benchmark of shardlog's `Shard` against other embedded logs and stores, on the
//! same workloads in one run: a naive buffered file log with CRC frames, the `commitlog` crate,
//! redb, SQLite (WAL, through rusqlite's bundled build) and fjall (RocksDB with
//! `--features rocksdb`).
//!
//! Every engine goes through [`Log`]: append calls of N records (partition key + data), a final
//! sync or a sync per call, close, reopen (timed, after dropping the page cache when root), a
//! cold full read and a warm full read, each record checked against what was written. The disk
//! bytes a run leaves are counted from the files' allocated blocks. Repetitions are interleaved
//! (engine order rotates) and medians reported; the machine's own limits are measured beside.
//!
//! ```text
//! cd benches/peers && cargo run --release -- [--mib 512] [--reps 3] [--sizes 100,1024,65536]
//!     [--batches 1,500] [--modes final,each] [--engines shardlog,naive,commitlog,redb,sqlite,fjall]
//!     [--max-seconds 60] [--dir DIR] [--no-probe]
//! ```

mod engines;
mod machine;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use engines::{open_engine, Engine};

/// What a read calls with each record: its index, partition key and data.
pub type Check<'a> = &'a mut dyn FnMut(u64, &[u8], &[u8]);

/// A log under test. Records are numbered from 0 in append order.
pub trait Log {
    /// Appends one call's records; with `sync`, returns once they are durable.
    fn append(&mut self, records: &[(&[u8], &[u8])], sync: bool) -> Result<(), String>;
    /// Makes everything appended durable.
    fn sync(&mut self) -> Result<(), String>;
    /// Reads every record from the first on, calling `check(index, key, data)` for each and
    /// verifying whatever checksum the engine keeps; returns how many there were.
    fn read_all(&mut self, check: Check<'_>) -> Result<u64, String>;
}

/// One workload: record size, records per append call, when to sync.
#[derive(Debug, Clone, Copy)]
struct Workload {
    size: usize,
    batch: usize,
    sync_each: bool,
}

impl Workload {
    fn label(&self) -> String {
        let size = match self.size {
            s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s / 1024),
            s => format!("{s} B"),
        };
        let sync = if self.sync_each {
            "fsync per call"
        } else {
            "final fsync"
        };
        format!("{size} x {} per call, {sync}", self.batch)
    }
}

/// What one run of one engine on one workload measured.
#[derive(Debug, Clone, Default)]
struct RunResult {
    /// Payload MB/s of the append calls alone (before the final sync, when there is one).
    append_mbps: f64,
    /// Payload MB/s including the final sync.
    synced_mbps: f64,
    /// Whether the append phase stopped at the time limit before the target volume.
    capped: bool,
    reopen_ms: f64,
    cold_read_mbps: f64,
    warm_read_mbps: f64,
    disk_mib: f64,
    /// Disk bytes over payload + keys.
    disk_ratio: f64,
}

/// The 16-byte partition key of record `i`.
fn key_of(i: u64) -> [u8; 16] {
    let mut k = *b"key-000000000000";
    let mut n = i % 1_000_000_000_000;
    for slot in k[4..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// Bytes of the random pool records take their data from.
const POOL: usize = 1 << 20;

/// A pool of pseudo-random (incompressible) bytes: record data cut from it at scattered places, so
/// an engine that compresses gains nothing a real payload of random bytes would not give it.
fn random_pool() -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..POOL)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Where in the pool record `i`'s data (of `size` bytes) starts.
fn pool_start(i: u64, size: usize) -> usize {
    (i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 20) as usize % (POOL - size + 1)
}

/// Record `i`'s data: its index (little-endian) over `size` bytes of the pool.
fn fill_data(i: u64, pool: &[u8], size: usize, out: &mut Vec<u8>) {
    let start = pool_start(i, size);
    out.clear();
    out.extend_from_slice(&pool[start..start + size]);
    let n = size.min(8);
    out[..n].copy_from_slice(&i.to_le_bytes()[..n]);
}

/// A checker that every engine's read calls with each record: offsets in order, key and data
/// exactly as written.
struct Checker<'t> {
    pool: &'t [u8],
    size: usize,
    next: u64,
    bad: Option<String>,
}

impl Checker<'_> {
    fn check(&mut self, i: u64, key: &[u8], data: &[u8]) {
        if self.bad.is_some() {
            return;
        }
        let n = data.len().min(8);
        let start = pool_start(i, self.size);
        let ok = i == self.next
            && key == key_of(i)
            && data.len() == self.size
            && data[..n] == i.to_le_bytes()[..n]
            && data[n..] == self.pool[start + n..start + self.size];
        if !ok {
            self.bad = Some(format!("record {i} (expected {}) is wrong", self.next));
        }
        self.next += 1;
    }
}

fn drop_caches() -> bool {
    // Write back dirty pages, then ask the kernel to drop clean ones (root only).
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Bytes the files under `dir` occupy on disk (allocated blocks).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                disk_bytes(&e.path())
            } else {
                meta.blocks() * 512
            };
        }
    }
    total
}

fn run_one(
    engine: Engine,
    w: Workload,
    mib: usize,
    max_seconds: f64,
    dir: &Path,
) -> Result<RunResult, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let pool = random_pool();
    let target = (mib * 1024 * 1024 / w.size) as u64;
    let mut log = open_engine(engine, dir, w.sync_each)?;

    // Append: the records of a group of calls (about 1 MiB, at least one call) are built ahead,
    // outside the timing; the group's calls are timed together (a clock read per call would
    // cost as much as an append of one small record).
    let calls_per_group = ((1 << 20) / (w.size * w.batch)).max(1);
    let group_records = calls_per_group * w.batch;
    let mut datas: Vec<Vec<u8>> = vec![Vec::with_capacity(w.size); group_records];
    let mut keys: Vec<[u8; 16]> = vec![[0; 16]; group_records];
    let mut written = 0u64;
    let mut capped = false;
    let mut busy = Duration::ZERO;
    let started = Instant::now();
    while written < target {
        let n = (group_records as u64).min(target - written) as usize;
        for j in 0..n {
            let i = written + j as u64;
            keys[j] = key_of(i);
            fill_data(i, &pool, w.size, &mut datas[j]);
        }
        let calls: Vec<Vec<(&[u8], &[u8])>> = (0..n)
            .step_by(w.batch)
            .map(|from| {
                (from..(from + w.batch).min(n))
                    .map(|j| (&keys[j][..], datas[j].as_slice()))
                    .collect()
            })
            .collect();
        let t = Instant::now();
        for call in &calls {
            log.append(call, w.sync_each)?;
        }
        busy += t.elapsed();
        written += n as u64;
        if started.elapsed().as_secs_f64() > max_seconds {
            capped = written < target;
            break;
        }
    }
    let payload = written as f64 * w.size as f64;
    let append_mbps = payload / busy.as_secs_f64() / 1e6;
    let t = Instant::now();
    log.sync()?;
    busy += t.elapsed();
    let synced_mbps = payload / busy.as_secs_f64() / 1e6;
    drop(log);
    let disk = disk_bytes(dir);

    // Reopen with a cold cache, then a cold and a warm full read.
    drop_caches();
    let t = Instant::now();
    let mut log = open_engine(engine, dir, w.sync_each)?;
    let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
    let read = |log: &mut Box<dyn Log>| -> Result<f64, String> {
        let mut checker = Checker {
            pool: &pool,
            size: w.size,
            next: 0,
            bad: None,
        };
        let t = Instant::now();
        let n = log.read_all(&mut |i, k, d| checker.check(i, k, d))?;
        let secs = t.elapsed().as_secs_f64();
        if let Some(bad) = checker.bad {
            return Err(format!("{engine:?}: {bad}"));
        }
        if n != written || checker.next != written {
            return Err(format!("{engine:?}: read {n} records of {written}"));
        }
        Ok(payload / secs / 1e6)
    };
    let cold_read_mbps = read(&mut log)?;
    let warm_read_mbps = read(&mut log)?;
    drop(log);
    if std::env::var_os("SHARDLOG_PEERS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(RunResult {
        append_mbps,
        synced_mbps,
        capped,
        reopen_ms,
        cold_read_mbps,
        warm_read_mbps,
        disk_mib: disk as f64 / (1024.0 * 1024.0),
        disk_ratio: disk as f64 / (written as f64 * (w.size + 16) as f64),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Args {
    mib: usize,
    reps: usize,
    sizes: Vec<usize>,
    batches: Vec<usize>,
    modes: Vec<bool>,
    engines: Vec<Engine>,
    max_seconds: f64,
    dir: PathBuf,
    /// Skip the machine probe (for profiling one engine).
    no_probe: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mib: 512,
        reps: 3,
        sizes: vec![100, 1024, 65536],
        batches: vec![1, 500],
        modes: vec![false, true],
        engines: Engine::ALL.to_vec(),
        max_seconds: 60.0,
        dir: PathBuf::from("peers-data"),
        no_probe: false,
    };
    let mut it = std::env::args().skip(1);
    let list = |v: String| -> Vec<String> { v.split(',').map(str::to_string).collect() };
    while let Some(flag) = it.next() {
        if flag == "--no-probe" {
            a.no_probe = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{flag} {s}: {e}"));
        match flag.as_str() {
            "--mib" => a.mib = num(&value)?,
            "--reps" => a.reps = num(&value)?,
            "--sizes" => {
                a.sizes = list(value)
                    .iter()
                    .map(|s| num(s))
                    .collect::<Result<_, _>>()?
            }
            "--batches" => {
                a.batches = list(value)
                    .iter()
                    .map(|s| num(s))
                    .collect::<Result<_, _>>()?
            }
            "--modes" => {
                a.modes = list(value)
                    .iter()
                    .map(|m| match m.as_str() {
                        "final" => Ok(false),
                        "each" => Ok(true),
                        other => Err(format!("--modes: {other} is not final or each")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--engines" => {
                a.engines = list(value)
                    .iter()
                    .map(|e| Engine::parse(e).ok_or(format!("unknown engine {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--max-seconds" => a.max_seconds = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--dir" => a.dir = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&args.dir).expect("create the data directory");
    println!("# shardlog peers benchmark");
    if !args.no_probe {
        machine::print_limits(&args.dir);
    }
    let root = drop_caches();
    println!(
        "page cache dropped before each reopen: {}",
        if root {
            "yes"
        } else {
            "NO (not root): reopen and cold reads ran warm"
        }
    );
    println!(
        "{} MiB of payload per run (an append phase stops at {} s: marked *), {} repetitions interleaved, medians\n",
        args.mib, args.max_seconds, args.reps
    );
    let mut workloads = Vec::new();
    for &sync_each in &args.modes {
        for &size in &args.sizes {
            for &batch in &args.batches {
                // A sync per call of one record is the fsync latency, not the log: skipped.
                if sync_each && batch == 1 {
                    continue;
                }
                workloads.push(Workload {
                    size,
                    batch,
                    sync_each,
                });
            }
        }
    }
    for w in workloads {
        let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); args.engines.len()];
        let mut failed: Vec<Option<String>> = vec![None; args.engines.len()];
        for rep in 0..args.reps {
            for k in 0..args.engines.len() {
                let e = (k + rep) % args.engines.len();
                let engine = args.engines[e];
                let dir = args.dir.join(format!("{engine:?}").to_lowercase());
                match run_one(engine, w, args.mib, args.max_seconds, &dir) {
                    Ok(r) => results[e].push(r),
                    Err(err) => {
                        // Reported, and the engine's row left out; the other engines go on.
                        eprintln!("{} / {engine:?}: {err}", w.label());
                        failed[e] = Some(err);
                    }
                }
            }
        }
        println!("## {}", w.label());
        println!("| engine | append MB/s | with final sync MB/s | reopen cold ms | read cold MB/s | read warm MB/s | disk MiB | disk / (payload+keys) |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for ((e, runs), failure) in args.engines.iter().zip(&results).zip(&failed) {
            if let Some(err) = failure {
                println!("| {e:?} | failed: {err} | | | | | | |");
                continue;
            }
            let m = |f: fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
            let capped = if runs.iter().any(|r| r.capped) {
                "*"
            } else {
                ""
            };
            println!(
                "| {:?} | {:.0}{capped} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} |",
                e,
                m(|r| r.append_mbps),
                m(|r| r.synced_mbps),
                m(|r| r.reopen_ms),
                m(|r| r.cold_read_mbps),
                m(|r| r.warm_read_mbps),
                m(|r| r.disk_mib),
                m(|r| r.disk_ratio),
            );
        }
        println!();
    }
}
