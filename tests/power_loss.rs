//! Power loss, simulated with LazyFS: the real `shardlog serve` binary runs on a LazyFS mount
//! (a FUSE file system that keeps every write in its own cache until fsync), is SIGKILLed at a
//! random moment while real clients put records and change streams, and then every unsynced
//! write is dropped (`lazyfs::clear-cache`), as a power cut would. The store must then open and
//! hold everything it acknowledged under `Always` and `GroupCommit` (records, stream changes,
//! Firehose deliveries, consumer-group checkpoints); under `Never` it must open and return only
//! records that were put, as the README promises.
//!
//! LazyFS passes file creation, renames and removals straight to the disk below, so these tests
//! cut file contents, not directory entries (the `operations` fuzz target cuts both).
//!
//! Needs LazyFS (`../shared/tools/lazyfs/build.sh` builds it; the binary is found through
//! `SHARDLOG_LAZYFS` or at that script's default output) and FUSE (root). Without them every test
//! prints `SKIPPED`, unless `SHARDLOG_REQUIRE_LAZYFS=1` (set by CI) makes that a failure.
#![cfg(feature = "server")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::http::Client;
use common::serve::{spawn_server, ServerProcess};
use rand::Rng;
use serde_json::{json, Value};
use shardlog::{Store, StoreOptions};

/// Where `build.sh` puts the binary when given no output directory.
const DEFAULT_LAZYFS: &str = "/tmp/lazyfs-build/lazyfs/build/lazyfs";

/// One LazyFS mount at a time: LazyFS itself has crashed (a segfault in its page cache, seen in
/// `dmesg`) under the load of several mounts at once while files were replaced by rename many
/// times a second.
static ONE_MOUNT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A LazyFS mount over a temporary directory, unmounted on drop.
struct LazyFs {
    _serial: std::sync::MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
    mount: PathBuf,
    faults_fifo: PathBuf,
    done_fifo: PathBuf,
    process: Child,
}

impl LazyFs {
    /// Mounts a fresh LazyFS, or `None` (after printing `SKIPPED`) when LazyFS or FUSE is missing
    /// and `SHARDLOG_REQUIRE_LAZYFS` is not `1`.
    fn mount() -> Option<LazyFs> {
        let binary = std::env::var_os("SHARDLOG_LAZYFS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LAZYFS));
        let required = std::env::var("SHARDLOG_REQUIRE_LAZYFS").is_ok_and(|v| v == "1");
        let missing = if !binary.is_file() {
            Some(format!("no LazyFS binary at {}", binary.display()))
        } else if !Path::new("/dev/fuse").exists() {
            Some("no /dev/fuse".to_string())
        } else {
            None
        };
        if let Some(why) = missing {
            assert!(!required, "{why}, and SHARDLOG_REQUIRE_LAZYFS=1");
            eprintln!("SKIPPED: {why} (build it with ../shared/tools/lazyfs/build.sh)");
            return None;
        }
        let serial = ONE_MOUNT_AT_A_TIME
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&mount).unwrap();
        let faults_fifo = dir.path().join("faults.fifo");
        let done_fifo = dir.path().join("done.fifo");
        let config = dir.path().join("lazyfs.toml");
        std::fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
                 [cache]\napply_eviction=false\n\
                 [cache.simple]\ncustom_size=\"2gb\"\nblocks_per_page=1\n\
                 [filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
                faults_fifo.display(),
                done_fifo.display()
            ),
        )
        .unwrap();
        let process = Command::new(&binary)
            .arg(&mount)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", root.display()))
            .arg("-f")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lazyfs");
        let lazyfs = LazyFs {
            _serial: serial,
            _dir: dir,
            mount,
            faults_fifo,
            done_fifo,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lazyfs.is_mounted() || !lazyfs.faults_fifo.exists() {
            assert!(Instant::now() < deadline, "LazyFS did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(lazyfs)
    }

    fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let needle = format!(" {} fuse", self.mount.display());
        mounts.lines().any(|l| l.contains(&needle))
    }

    /// The store's directory on the mount.
    fn data(&self) -> PathBuf {
        self.mount.join("data")
    }

    /// Whether LazyFS itself is gone: its process exited (it has crashed with a segfault in its
    /// page cache, seen in `dmesg`) or its mount no longer answers.
    fn crashed(&mut self) -> bool {
        let exited = !matches!(self.process.try_wait(), Ok(None));
        exited || !self.is_mounted() || std::fs::metadata(&self.mount).is_err()
    }

    /// Drops every write not yet fsynced, and waits until LazyFS says it has.
    ///
    /// Never blocks on a LazyFS that is gone: the command FIFO is opened non-blocking (LazyFS keeps
    /// it open for reading while it runs, so only a dead LazyFS gives `ENXIO`), and the answer is
    /// awaited with a timeout. Either failure panics, and [`on_lazyfs`] tells a crashed LazyFS from
    /// a failing shardlog.
    fn cut_power(&self) {
        assert!(self.is_mounted(), "{LAZYFS_GONE}");
        let (tx, rx) = mpsc::channel();
        // Open for reading before the command goes out, so LazyFS's answer finds a reader (read and
        // write: opening a FIFO so never waits for the other end).
        let done = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.done_fifo)
            .unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(done).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut fifo = self.open_command_fifo();
        fifo.write_all(b"lazyfs::clear-cache\n").unwrap();
        drop(fifo);
        let reply = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("LazyFS confirms the cleared cache within 30 s");
        assert!(reply.contains("finished::clear-cache"), "{reply:?}");
    }

    /// LazyFS's command FIFO, open for writing. LazyFS opens its end a moment after it mounts, so
    /// `ENXIO` (no reader) is retried for a few seconds before it means LazyFS is gone.
    fn open_command_fifo(&self) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt as _;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(&self.faults_fifo);
            match opened {
                Ok(fifo) => return fifo,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                    assert!(Instant::now() < deadline, "{LAZYFS_GONE}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("open {}: {e}", self.faults_fifo.display()),
            }
        }
    }
}

const LAZYFS_GONE: &str =
    "LazyFS is gone: it crashed (see dmesg), so this run says nothing about shardlog";

/// How many times a scenario is run on a fresh mount when LazyFS crashes under it.
const LAZYFS_ATTEMPTS: usize = 3;

/// Runs `scenario` on a fresh LazyFS mount (or prints `SKIPPED`, see [`LazyFs::mount`]). LazyFS
/// itself sometimes crashes under rapid file replacement; a scenario that fails because of that
/// says nothing about shardlog, so it is run again on a fresh mount (with a fresh seed), up to
/// [`LAZYFS_ATTEMPTS`] times. Any failure while LazyFS is alive fails the test at once.
fn on_lazyfs(scenario: impl Fn(&LazyFs)) {
    for attempt in 1..=LAZYFS_ATTEMPTS {
        let Some(mut fs) = LazyFs::mount() else {
            return;
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&fs)));
        match outcome {
            Ok(()) => return,
            Err(panic) if !fs.crashed() => std::panic::resume_unwind(panic),
            Err(_) => eprintln!(
                "LazyFS crashed under attempt {attempt} of {LAZYFS_ATTEMPTS} (see dmesg); \
                 the failure above is LazyFS's, not shardlog's"
            ),
        }
    }
    panic!("LazyFS crashed under all {LAZYFS_ATTEMPTS} attempts: nothing was proven");
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // `-z`: a crashed LazyFS leaves a mount that no longer answers; detach it all the same.
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mount)
            .status();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One acknowledged record: its stream, sequence number and data.
type Acked = (String, String, Vec<u8>);

/// Runs `writers` threads, each calling `put(client, writer, batch)` for batches 0, 1, ... until it
/// returns `None` (the server is gone), and SIGKILLs `server` `kill_after` the first
/// acknowledgement; returns everything the puts acknowledged.
fn load_until_killed<T: Send + 'static>(
    addr: SocketAddr,
    writers: usize,
    kill_after: Duration,
    server: ServerProcess,
    put: impl Fn(&mut Client, usize, u64) -> Option<Vec<T>> + Send + Clone + 'static,
) -> Vec<T> {
    let (first_ack, first_ack_rx) = mpsc::channel::<()>();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (first_ack, put) = (first_ack.clone(), put.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let Ok(mut c) = Client::connect(addr) else {
                    return acked;
                };
                for batch in 0.. {
                    let Some(new) = put(&mut c, w, batch) else {
                        break;
                    };
                    if !new.is_empty() {
                        let _ = first_ack.send(());
                    }
                    acked.extend(new);
                }
                acked
            })
        })
        .collect();
    first_ack_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the restarted server acknowledges a put");
    std::thread::sleep(kill_after);
    server.kill();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Puts batches of records into `stream` from `writers` threads until the server goes away,
/// killing it `kill_after` its first acknowledgement; returns every record it acknowledged.
fn put_until_killed(
    addr: SocketAddr,
    stream: &str,
    tag: &str,
    writers: usize,
    kill_after: Duration,
    server: ServerProcess,
) -> Vec<Acked> {
    let (stream, tag) = (stream.to_string(), tag.to_string());
    load_until_killed(addr, writers, kill_after, server, move |c, w, batch| {
        let datas: Vec<String> = (0..50).map(|i| format!("{tag}:{w}:{batch}:{i}")).collect();
        let results = put_batch(c, &stream, datas)?;
        Some(
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|refused| panic!("a put was refused: {refused}")))
                .collect(),
        )
    })
}

/// One PutRecords of `datas` into `stream`: each record acknowledged, or refused (the entry the
/// server answered); `None` if the server is gone.
fn put_batch(
    c: &mut Client,
    stream: &str,
    datas: Vec<String>,
) -> Option<Vec<Result<Acked, Value>>> {
    let records: Vec<Value> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "PartitionKey": format!("k{}", i % 17),
                "Data": base64::engine::general_purpose::STANDARD.encode(d),
            })
        })
        .collect();
    let body = json!({"StreamName": stream, "Records": records});
    let reply = c.kinesis("PutRecords", &body).ok()?;
    if reply.status != 200 {
        return None;
    }
    let results = reply.json()["Records"].as_array().cloned()?;
    Some(
        datas
            .into_iter()
            .zip(results)
            .map(|(data, r)| match r["SequenceNumber"].as_str() {
                Some(seq) => Ok((stream.to_string(), seq.to_string(), data.into_bytes())),
                None => Err(r),
            })
            .collect(),
    )
}

/// Every record of every stream of the store at `data`, by (stream, sequence number), once the
/// store has opened (recovering from the cut) and `shardlog verify` then finds every file clean.
fn stored_records(data: &Path) -> HashMap<(String, String), Vec<u8>> {
    let stored = read_store(data);
    let verify = common::shardlog(&["verify", data.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "verify after recovery: {}{}",
        common::text(&verify.stdout),
        common::text(&verify.stderr)
    );
    stored
}

fn read_store(data: &Path) -> HashMap<(String, String), Vec<u8>> {
    let store = Store::open(data, StoreOptions::default()).expect("the store opens after the cut");
    let mut stored = HashMap::new();
    for name in store.list_streams() {
        let stream = store.stream(&name).unwrap();
        for shard in stream.describe().shards {
            let (records, _) = common::drain(&store, &stream, shard.shard_id);
            for r in records {
                stored.insert(
                    (name.clone(), r.sequence_number.to_string()),
                    r.data.to_vec(),
                );
            }
        }
    }
    stored
}

fn create_stream(addr: SocketAddr, name: &str, shards: u32) {
    let mut c = Client::connect(addr).unwrap();
    let reply = c
        .kinesis(
            "CreateStream",
            &json!({"StreamName": name, "ShardCount": shards}),
        )
        .unwrap();
    assert_eq!(reply.status, 200, "{}", common::text(&reply.body));
}

/// Under a syncing policy, `cuts` power cuts at random moments of a put load, each followed by a
/// restart that must find every record acknowledged so far, in this cycle and all before it.
fn puts_survive_power_cuts(fs: &LazyFs, flush: &str, cuts: usize) {
    let mut rng = common::crash_rng(&format!("power loss {flush}"));
    let mut all_acked: Vec<Acked> = Vec::new();
    for cut in 0..cuts {
        let (server, addr) = spawn_server(&fs.data(), flush);
        if cut == 0 {
            create_stream(addr, "s", 4);
        }
        let kill_after = Duration::from_millis(rng.gen_range(100..700));
        let acked = put_until_killed(addr, "s", &format!("{flush}{cut}"), 3, kill_after, server);
        assert!(
            !acked.is_empty() || cut > 0,
            "nothing was acknowledged before the first cut"
        );
        fs.cut_power();
        all_acked.extend(acked);
        let stored = stored_records(&fs.data());
        for (stream, seq, data) in &all_acked {
            assert_eq!(
                stored
                    .get(&(stream.clone(), seq.clone()))
                    .map(|d| common::text(d)),
                Some(common::text(data)),
                "cut {cut}: acknowledged record {seq} of {stream} is missing or wrong"
            );
        }
        eprintln!(
            "{flush} cut {cut}: all {} acknowledged records found ({} stored)",
            all_acked.len(),
            stored.len()
        );
    }
}

#[test]
fn acknowledged_puts_survive_power_cuts_under_always() {
    on_lazyfs(|fs| puts_survive_power_cuts(fs, "always", 8));
}

#[test]
fn acknowledged_puts_survive_power_cuts_under_group_commit() {
    on_lazyfs(|fs| puts_survive_power_cuts(fs, "group", 8));
}

/// `Never` promises nothing about a machine crash except a store that opens and returns no record
/// that was not put: whatever survives is checked against what was sent.
#[test]
fn under_never_a_power_cut_loses_only_unsynced_records_and_corrupts_nothing() {
    on_lazyfs(never_scenario);
}

fn never_scenario(fs: &LazyFs) {
    let mut rng = common::crash_rng("power loss never");
    // Every record acknowledged under each sequence number: a cut under `Never` may lose what a
    // sequence number named, and the number is then handed out again.
    let mut sent: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let mut acked_total = 0;
    for cut in 0..4 {
        let (server, addr) = spawn_server(&fs.data(), "never");
        if cut == 0 {
            create_stream(addr, "s", 2);
        }
        let kill_after = Duration::from_millis(rng.gen_range(100..500));
        let acked = put_until_killed(addr, "s", &format!("never{cut}"), 2, kill_after, server);
        fs.cut_power();
        acked_total += acked.len();
        for (_, seq, data) in acked {
            sent.entry(seq).or_default().push(data);
        }
        let stored = stored_records(&fs.data());
        for ((_, seq), data) in &stored {
            // A record stored but never acknowledged was in flight at the kill: its data still
            // has the shape the writers send.
            match sent.get(seq) {
                Some(sent) => assert!(sent.contains(data), "{seq}: {}", common::text(data)),
                None => assert!(common::text(data).starts_with("never"), "{seq}"),
            }
        }
        eprintln!(
            "never cut {cut}: {} records stored of {acked_total} acknowledged so far, none wrong",
            stored.len(),
        );
    }
}

/// Stream changes (create, reshard, delete) acknowledged before a cut are all there after it,
/// whole: a created stream opens with its shards, a reshard shows its new shards, a deleted
/// stream is gone; every acknowledged record of a surviving stream is readable.
#[test]
fn acknowledged_stream_changes_survive_power_cuts() {
    on_lazyfs(stream_changes_scenario);
}

fn stream_changes_scenario(fs: &LazyFs) {
    let mut rng = common::crash_rng("power loss admin");
    // What the store must show: stream -> open shard count (None: deleted).
    let mut expected: HashMap<String, Option<usize>> = HashMap::new();
    let mut acked: Vec<Acked> = Vec::new();
    let mut next_stream = 0;
    for cut in 0..6 {
        let (server, addr) = spawn_server(&fs.data(), "always");
        let (tx, rx) = mpsc::channel::<Change>();
        let first = next_stream;
        let (started_tx, started) = mpsc::channel();
        let driver =
            std::thread::spawn(move || drive_stream_changes(addr, first, &tx, &started_tx));
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("the restarted server creates a stream");
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
        server.kill();
        driver.join().unwrap();
        fs.cut_power();
        let mut changes = 0;
        // A deletion sent but not acknowledged may or may not have happened.
        let mut deleting: Vec<String> = Vec::new();
        for change in rx.try_iter() {
            match change {
                Change::Deleting(name) => deleting.push(name),
                Change::Acked(name, state) => {
                    let n: usize = name[1..].parse().unwrap();
                    next_stream = next_stream.max(n + 1);
                    deleting.retain(|d| d != &name);
                    expected.insert(name, state);
                    changes += 1;
                }
                Change::Put(record) => acked.push(record),
            }
        }
        // A stream whose creation was in flight may exist: never reuse its name.
        next_stream += 1;

        let store = Store::open(fs.data(), StoreOptions::default()).expect("the store opens");
        let listed = store.list_streams();
        // A deletion cut short either happened (the stream is gone, records and all) or not.
        for name in deleting.iter().filter(|n| !listed.contains(n)) {
            expected.insert(name.clone(), None);
        }
        for (name, state) in &expected {
            match state {
                None => assert!(!listed.contains(name), "cut {cut}: deleted {name} is back"),
                Some(count) => {
                    let stream = store
                        .stream(name)
                        .unwrap_or_else(|e| panic!("cut {cut}: {name} is gone: {e}"));
                    let open = stream
                        .describe()
                        .shards
                        .iter()
                        .filter(|s| s.ending_sequence_number.is_none())
                        .count();
                    assert!(
                        open >= *count,
                        "cut {cut}: {name} has {open} open shards, {count} acknowledged"
                    );
                }
            }
        }
        drop(store);
        let stored = stored_records(&fs.data());
        for (stream, seq, data) in &acked {
            if expected.get(stream) == Some(&None) {
                continue;
            }
            assert_eq!(
                stored.get(&(stream.clone(), seq.clone())),
                Some(data),
                "cut {cut}: acknowledged record {seq} of {stream} is missing"
            );
        }
        eprintln!(
            "admin cut {cut}: {changes} acknowledged changes this round, {} streams expected, all found",
            expected.len()
        );
    }
}

/// What a worker of the checkpoint scenario had acknowledged.
enum Progress {
    /// A record put.
    Put(Acked),
    /// A checkpoint of (shard, sequence number) in group `g`.
    Checkpoint(String, String),
}

/// One round of consumer-group worker `worker`: lease shards of `s` in group `g`, read up to 40
/// records of each and checkpoint the last one. `None` once the server is gone.
fn consume_and_checkpoint(c: &mut Client, worker: &str) -> Option<Vec<Progress>> {
    const GROUPS: &str = "ShardlogConsumerGroups_20261126";
    let call = |c: &mut Client, target: &str, body: Value| -> Option<common::http::Reply> {
        let body = serde_json::to_vec(&body).unwrap();
        c.post(target, "application/x-amz-json-1.1", &body).ok()
    };
    let leased = call(
        c,
        &format!("{GROUPS}.LeaseShards"),
        json!({"GroupName": "g", "StreamName": "s", "WorkerId": worker,
               "LeaseDurationMillis": 1000}),
    )?;
    if leased.status != 200 {
        return None;
    }
    let mut acked = Vec::new();
    for shard in leased.json()["Shards"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let page = c
            .kinesis(
                "GetRecords",
                &json!({"ShardIterator": shard["ShardIterator"], "Limit": 40}),
            )
            .ok()?;
        if page.status != 200 {
            return None;
        }
        let page = page.json();
        let Some(last) = page["Records"].as_array().and_then(|r| r.last()) else {
            continue;
        };
        let seq = last["SequenceNumber"].as_str().unwrap().to_string();
        let reply = call(
            c,
            &format!("{GROUPS}.Checkpoint"),
            json!({"GroupName": "g", "WorkerId": worker, "SequenceNumber": seq}),
        )?;
        // A lease lost meanwhile (to the other worker) is not an acknowledgement.
        if reply.status == 200 {
            let shard_id = shard["ShardId"].as_str().unwrap().to_string();
            acked.push(Progress::Checkpoint(shard_id, seq));
        }
    }
    // A round every 25 ms: LazyFS itself crashes (a segfault in its cache) when group files
    // are replaced hundreds of times a second; this rate still makes ~20 checkpoints a cut.
    std::thread::sleep(Duration::from_millis(25));
    Some(acked)
}

/// A consumer group's checkpoints, written through the API while records are put: after each
/// cut every acknowledged checkpoint is there (or a later one), and none points past the records
/// that survived.
#[test]
fn acknowledged_checkpoints_survive_power_cuts() {
    on_lazyfs(checkpoints_scenario);
}

fn checkpoints_scenario(fs: &LazyFs) {
    let mut rng = common::crash_rng("power loss checkpoints");
    let mut all_acked: Vec<Acked> = Vec::new();
    // shard -> the furthest acknowledged checkpoint.
    let mut furthest: HashMap<String, u128> = HashMap::new();
    for cut in 0..6 {
        let (server, addr) = spawn_server(&fs.data(), "always");
        if cut == 0 {
            create_stream(addr, "s", 2);
        }
        let kill_after = Duration::from_millis(rng.gen_range(200..800));
        let tag = format!("c{cut}");
        // Writer 0 puts, writers 1 and 2 are the group's workers.
        let progress = load_until_killed(addr, 3, kill_after, server, move |c, w, batch| {
            if w > 0 {
                return consume_and_checkpoint(c, &format!("w{w}"));
            }
            let datas: Vec<String> = (0..20).map(|i| format!("{tag}:{batch}:{i}")).collect();
            // (A refused record stops this writer; `cut_power` then tells a crashed LazyFS from
            // a refusal by shardlog, which the put scenarios fail on.)
            put_batch(c, "s", datas)?
                .into_iter()
                .map(|r| r.ok().map(Progress::Put))
                .collect()
        });
        fs.cut_power();
        let mut checkpoints = 0;
        for p in progress {
            match p {
                Progress::Put(record) => all_acked.push(record),
                Progress::Checkpoint(shard, seq) => {
                    let seq: u128 = seq.parse().unwrap();
                    let best = furthest.entry(shard).or_default();
                    *best = (*best).max(seq);
                    checkpoints += 1;
                }
            }
        }
        let stored = stored_records(&fs.data());
        for (stream, seq, data) in &all_acked {
            assert_eq!(
                stored.get(&(stream.clone(), seq.clone())),
                Some(data),
                "cut {cut}: acknowledged record {seq} is missing"
            );
        }
        let store = std::sync::Arc::new(Store::open(fs.data(), StoreOptions::default()).unwrap());
        let group = shardlog::consumer::ConsumerGroup::open_existing(store, "g")
            .expect("the group file reads after the cut");
        let found: HashMap<String, u128> = group
            .describe()
            .unwrap()
            .shards
            .into_iter()
            .filter_map(|s| {
                Some((
                    s.shard_id.to_string(),
                    s.checkpoint?.to_string().parse().unwrap(),
                ))
            })
            .collect();
        for (shard, &acked) in &furthest {
            let kept = found.get(shard).copied();
            assert!(
                kept >= Some(acked),
                "cut {cut}: {shard} checkpoint {kept:?}, acknowledged {acked}"
            );
            let last_stored = stored
                .keys()
                .map(|(_, seq)| seq.parse::<u128>().unwrap())
                .filter(|seq| seq >> 64 == acked >> 64)
                .max();
            assert!(
                kept <= last_stored,
                "cut {cut}: {shard} checkpoint {kept:?} is past its last record {last_stored:?}"
            );
        }
        eprintln!(
            "checkpoint cut {cut}: {checkpoints} acknowledged checkpoints this round, {} records, all kept",
            all_acked.len()
        );
    }
    assert!(!furthest.is_empty(), "no checkpoint was ever acknowledged");
}

/// What the stream-changes driver tells the checker, in order.
enum Change {
    /// The change to `stream` was acknowledged: it now has this many open shards (`None`: gone).
    Acked(String, Option<usize>),
    /// A deletion of this stream was sent.
    Deleting(String),
    /// An acknowledged record.
    Put(Acked),
}

/// Creates streams `s{first}`, `s{first+1}`, ... (2 shards), puts a record into each, rescales
/// it to 4 shards, and deletes every other one, until the server goes away.
fn drive_stream_changes(
    addr: SocketAddr,
    first: usize,
    tx: &mpsc::Sender<Change>,
    started: &mpsc::Sender<()>,
) {
    let Ok(mut c) = Client::connect(addr) else {
        return;
    };
    let mut call = |op: &str, body: Value| c.kinesis(op, &body).ok().filter(|r| r.status == 200);
    for n in first.. {
        let name = format!("s{n}");
        if call("CreateStream", json!({"StreamName": name, "ShardCount": 2})).is_none() {
            return;
        }
        let _ = tx.send(Change::Acked(name.clone(), Some(2)));
        let _ = started.send(());
        let data = format!("admin:{name}");
        let body = json!({"StreamName": name, "PartitionKey": "k",
                          "Data": base64::engine::general_purpose::STANDARD.encode(&data)});
        let Some(put) = call("PutRecord", body) else {
            return;
        };
        let seq = put.json()["SequenceNumber"].as_str().unwrap().to_string();
        let _ = tx.send(Change::Put((name.clone(), seq, data.into_bytes())));
        let body = json!({"StreamName": name, "TargetShardCount": 4,
                          "ScalingType": "UNIFORM_SCALING"});
        if call("UpdateShardCount", body).is_none() {
            return;
        }
        let _ = tx.send(Change::Acked(name.clone(), Some(4)));
        if n % 2 == 1 && n > first {
            let older = format!("s{}", n - 1);
            let _ = tx.send(Change::Deleting(older.clone()));
            let body = json!({"StreamName": older, "EnforceConsumerDeletion": true});
            if call("DeleteStream", body).is_none() {
                return;
            }
            let _ = tx.send(Change::Acked(older, None));
        }
    }
}

fn firehose(c: &mut Client, operation: &str, body: &Value) -> Option<common::http::Reply> {
    c.post(
        &format!("Firehose_20150804.{operation}"),
        "application/x-amz-json-1.1",
        &serde_json::to_vec(body).unwrap(),
    )
    .ok()
}

/// Every line of every delivered object under `bucket` (temporary files, named with a leading
/// dot, left out).
fn delivered_lines(bucket: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let mut dirs = vec![bucket.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if path.is_dir() {
                dirs.push(path);
            } else if !hidden {
                let text = common::text(&std::fs::read(&path).unwrap());
                lines.extend(text.lines().map(str::to_string));
            }
        }
    }
    lines
}

/// Firehose delivery across power cuts: every record a `PutRecordBatch` acknowledged is
/// delivered once the restarted server catches up, and no record is delivered twice.
#[test]
fn firehose_delivers_every_acknowledged_record_exactly_once_across_power_cuts() {
    on_lazyfs(firehose_scenario);
}

fn firehose_scenario(fs: &LazyFs) {
    let mut rng = common::crash_rng("power loss firehose");
    let bucket = fs.data().join("objects/fh-bucket");
    let mut acked: Vec<String> = Vec::new();
    for cut in 0..4 {
        let (server, addr) = spawn_server(&fs.data(), "always");
        if cut == 0 {
            let mut c = Client::connect(addr).unwrap();
            let created = firehose(
                &mut c,
                "CreateDeliveryStream",
                &json!({
                    "DeliveryStreamName": "d",
                    "ExtendedS3DestinationConfiguration": {
                        "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                        "BucketARN": "arn:aws:s3:::fh-bucket",
                        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
                        "CompressionFormat": "UNCOMPRESSED",
                    }
                }),
            )
            .unwrap();
            assert_eq!(created.status, 200, "{}", common::text(&created.body));
        }
        let kill_after = Duration::from_millis(rng.gen_range(0..600));
        acked.extend(load_until_killed(
            addr,
            2,
            kill_after,
            server,
            move |c, w, batch| {
                let lines: Vec<String> = (0..100)
                    .map(|i| format!("fh{cut}:{w}:{batch}:{i}"))
                    .collect();
                let records: Vec<Value> = lines
                    .iter()
                    .map(|l| {
                        let data = format!("{l}\n");
                        json!({"Data": base64::engine::general_purpose::STANDARD.encode(data)})
                    })
                    .collect();
                let body = json!({"DeliveryStreamName": "d", "Records": records});
                let reply = firehose(c, "PutRecordBatch", &body)?;
                if reply.status != 200 {
                    return None;
                }
                let responses = reply.json()["RequestResponses"].as_array().cloned();
                let acked = lines
                    .into_iter()
                    .zip(responses.unwrap_or_default())
                    .map(|(line, r)| {
                        assert!(r["RecordId"].is_string(), "a put was refused: {r}");
                        line
                    })
                    .collect();
                Some(acked)
            },
        ));
        fs.cut_power();

        // Restarted, the server delivers what its buffer holds.
        let (server, _addr) = spawn_server(&fs.data(), "always");
        let deadline = Instant::now() + Duration::from_secs(60);
        let delivered = loop {
            let lines = delivered_lines(&bucket);
            let set: std::collections::HashSet<&String> = lines.iter().collect();
            if acked.iter().all(|l| set.contains(l)) {
                break lines;
            }
            assert!(
                Instant::now() < deadline,
                "cut {cut}: {} of {} acknowledged records delivered after a minute",
                acked.iter().filter(|l| set.contains(l)).count(),
                acked.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(server.terminate(), "the server stops cleanly");
        let mut seen = std::collections::HashSet::new();
        for line in &delivered {
            assert!(seen.insert(line), "cut {cut}: {line} delivered twice");
        }
        eprintln!(
            "firehose cut {cut}: all {} acknowledged records delivered once ({} delivered)",
            acked.len(),
            delivered.len()
        );
    }
}
