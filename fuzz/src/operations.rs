// Body of the `operations` fuzz target: arbitrary sequences of appends, reads, seeks, rolls,
// reopens, retention deletes, injected I/O faults and crashes against an in-memory model of the
// shard. Shared by the cargo-fuzz target and by `cargo test --features failpoints`
// (tests/suite/fuzz_operations.rs), which runs it over the committed seeds.
//
// The I/O layer is shardlog's `failpoints` feature: an armed fault makes the n-th write,
// allocation, truncation or sync fail (a write first writes a torn prefix). Any error ends the
// process's life: the shard is dropped and "crashes" — under `Never` the page cache survives (a
// killed process), under `Always` and `GroupCommit` the power is cut: every file goes back to its
// last fsynced contents plus an arbitrary subset of the 4 KiB pages written since. After reopening,
// the shard must hold exactly the acknowledged records (under every policy, as each survives its
// crash model) followed by a prefix of the batch that failed, and nothing else.
//
// `unwrap`/`expect` here are on the harness's own work, or state what the engine must do.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shardlog::faults;
use shardlog::log::shard::{DEFAULT_BATCH_BYTES, MIN_BATCH_BYTES};
use shardlog::{
    Clock, FlushPolicy, ManualClock, NewRecord, Offset, ReadLimits, Record, Shard, ShardOptions,
};

#[path = "input.rs"]
#[macro_use]
mod input;
use input::Input;

const T0: i64 = 1_700_000_000_000;

/// A record as the model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Vec<u8>,
    data: Vec<u8>,
    arrival_ms: i64,
    /// A record of a failed append whose offset a crash left empty while keeping later records
    /// of it (a power cut kept a later page and lost an earlier one): recovery keeps the intact
    /// batches after the damage and never reuses the offset, so reads skip it.
    lost: bool,
}

struct Harness {
    dir: tempfile::TempDir,
    options: ShardOptions,
    clock: Arc<ManualClock>,
    durable_policy: bool,
    shard: Option<Shard>,
    /// Offset of `acked[0]`.
    first: u64,
    /// Records that must be there (acknowledged, or found after a crash).
    acked: Vec<Rec>,
    /// The cutoff of a `delete_before` that failed: it may have deleted any of the segments it
    /// was deleting (all older than the cutoff) before it failed, so the next crash may find
    /// the log starting later, past records older than this.
    failed_delete_before: Option<i64>,
}

fn same(record: &Record, rec: &Rec) -> bool {
    record.partition_key[..] == rec.key[..]
        && record.data[..] == rec.data[..]
        && record.arrival_ms == rec.arrival_ms
}

/// The files of a directory with their sizes, for traces.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    let len = e.metadata().map_or(0, |m| m.len());
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn read_all(shard: &Shard) -> Vec<Record> {
    let mut out = Vec::new();
    let mut cursor = shard.first_offset();
    loop {
        let batch = shard
            .read(cursor, ReadLimits::default())
            .expect("an undamaged shard reads");
        if batch.records.is_empty() {
            return out;
        }
        cursor = batch.next_offset;
        out.extend(batch.records);
    }
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Harness {
        let clock = Arc::new(ManualClock::new(T0));
        let flush = match input.byte() % 3 {
            0 => FlushPolicy::Always,
            1 => FlushPolicy::GroupCommit {
                interval: Duration::ZERO,
            },
            _ => FlushPolicy::Never,
        };
        let segment_byte = input.byte();
        let options = ShardOptions {
            segment_bytes: 4096 + u64::from(segment_byte) * 256,
            // Small batches make appends span several; taken from the same input byte so that
            // existing seeds keep their meaning.
            batch_bytes: [MIN_BATCH_BYTES, 1024, DEFAULT_BATCH_BYTES]
                [usize::from(segment_byte % 3)],
            max_segment_age: match input.byte() % 4 {
                0 => Some(Duration::from_millis(200)),
                _ => None,
            },
            max_record_bytes: 64 * 1024,
            flush,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            tier: None,
        };
        let dir = tempfile::tempdir().unwrap();
        faults::reset(dir.path());
        faults::mark_durable(dir.path()).unwrap();
        let shard = Shard::open(dir.path(), options.clone()).expect("a new shard opens");
        Harness {
            dir,
            durable_policy: flush != FlushPolicy::Never,
            options,
            clock,
            shard: Some(shard),
            first: 0,
            acked: Vec::new(),
            failed_delete_before: None,
        }
    }

    fn shard(&self) -> &Shard {
        self.shard
            .as_ref()
            .expect("the shard is open between operations")
    }

    fn end(&self) -> u64 {
        self.first + self.acked.len() as u64
    }

    /// The records the shard must serve, with their offsets (every one not `lost`).
    fn present(&self) -> impl Iterator<Item = (u64, &Rec)> {
        self.acked
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.lost)
            .map(|(i, r)| (self.first + i as u64, r))
    }

    fn append(&mut self, input: &mut Input<'_>) {
        let count = 1 + usize::from(input.byte() % 8);
        let now = self.clock.now_ms();
        let batch: Vec<Rec> = (0..count)
            .map(|_| {
                let key = format!("k{}", input.byte() % 16).into_bytes();
                let len = match input.byte() {
                    // Now and then a record large enough for the direct-write path.
                    255 => 40 * 1024,
                    b => usize::from(b) * 3,
                };
                let fill = input.byte();
                let data = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                Rec {
                    key,
                    data,
                    arrival_ms: now,
                    lost: false,
                }
            })
            .collect();
        let records: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|r| NewRecord {
                partition_key: &r.key,
                explicit_hash_key: Some(7),
                data: &r.data,
            })
            .collect();
        trace!("append {count} at {} (t={now})", self.end());
        match self.shard().append(&records) {
            Ok(appended) => {
                assert_eq!(appended.first, Offset::new(self.end()));
                self.acked.extend(batch);
            }
            Err(e) => {
                trace!("append failed: {e}");
                assert!(
                    faults::fired(self.dir.path()),
                    "append failed without an injected fault: {e}"
                );
                self.crash(input, &batch)
            }
        }
    }

    /// Drops the shard, applies the crash model, reopens, and checks the shard holds the
    /// acknowledged records followed by a prefix of `failed`. What it holds becomes the model.
    fn crash(&mut self, input: &mut Input<'_>, failed: &[Rec]) {
        drop(self.shard.take()); // may be None already: a reopen failed
        faults::disarm(self.dir.path());
        if self.durable_policy {
            faults::power_cut(self.dir.path(), &mut || input.coin()).unwrap();
        }
        if let Some(keep) = std::env::var_os("SHARDLOG_FUZZ_KEEP") {
            let to = Path::new(&keep).join(format!("{}", self.end()));
            std::fs::create_dir_all(&to).unwrap();
            for (name, _) in files(self.dir.path()) {
                std::fs::copy(self.dir.path().join(&name), to.join(&name)).unwrap();
            }
        }
        let shard = Shard::open(self.dir.path(), self.options.clone())
            .expect("a shard opens after any crash");
        let found = read_all(&shard);
        trace!(
            "read at end: {:?}",
            shard
                .read(Offset::new(self.end()), ReadLimits::default())
                .map(|b| (b.records.len(), b.next_offset))
        );
        trace!(
            "crash: acked {}..{}, failed {}, found {} records, next offset {}, files {:?}",
            self.first,
            self.end(),
            failed.len(),
            found.len(),
            shard.next_offset(),
            files(self.dir.path())
        );
        let first = found
            .first()
            .map_or(shard.next_offset().get(), |r| r.offset.get());
        if let Some(cutoff) = self.failed_delete_before.take() {
            if first > self.first {
                let gone = (first - self.first) as usize;
                assert!(
                    gone <= self.acked.len()
                        && self.acked[..gone]
                            .iter()
                            .all(|r| r.lost || r.arrival_ms < cutoff),
                    "a failed delete_before({cutoff}) took records newer than its cutoff"
                );
                self.acked.drain(..gone);
                self.first = first;
            }
        }
        let model_first = self.present().next().map_or(self.end(), |(o, _)| o);
        assert_eq!(
            first, model_first,
            "the first offset moved across a crash (acknowledged records lost?)"
        );
        let expected: Vec<(u64, &Rec)> = self.present().collect();
        assert!(
            found.len() >= expected.len(),
            "acknowledged records lost: {} of {} survived",
            found.len(),
            expected.len()
        );
        for (record, (offset, rec)) in found.iter().zip(&expected) {
            assert_eq!(record.offset.get(), *offset);
            assert!(same(record, rec), "offset {} changed", record.offset);
        }
        // Beyond them: records of the failed append, in order at their own offsets; a power cut
        // may have kept later ones and not earlier ones (those offsets stay empty).
        let failed_base = self.end();
        let mut adopted = 0;
        trace!(
            "beyond the model: {:?}",
            found[expected.len()..]
                .iter()
                .map(|r| r.offset.get())
                .collect::<Vec<_>>()
        );
        for record in &found[expected.len()..] {
            let j = record
                .offset
                .get()
                .checked_sub(failed_base)
                .map(|j| j as usize)
                .filter(|&j| j >= adopted)
                .expect("records beyond the acknowledged ones follow them, in order");
            let rec = failed
                .get(j)
                .expect("records beyond the acknowledged ones come from the failed batch");
            assert!(same(record, rec), "offset {} changed", record.offset);
            for skipped in &failed[adopted..j] {
                self.acked.push(Rec {
                    lost: true,
                    ..skipped.clone()
                });
            }
            self.acked.push(rec.clone());
            adopted = j + 1;
        }
        assert_eq!(shard.next_offset().get(), self.end());
        faults::mark_durable(self.dir.path()).unwrap();
        self.shard = Some(shard);
    }

    fn check_read(&self, input: &mut Input<'_>) {
        let span = self.acked.len() as u64 + 2;
        let from = self.first + u64::from(input.u16()) % span;
        let max = 1 + usize::from(input.byte());
        let batch = self
            .shard()
            .read(
                Offset::new(from),
                ReadLimits {
                    max_records: max,
                    ..ReadLimits::default()
                },
            )
            .expect("reads of an undamaged shard succeed");
        let expected: Vec<(u64, &Rec)> = self
            .present()
            .filter(|&(o, _)| o >= from)
            .take(max)
            .collect();
        assert_eq!(batch.records.len(), expected.len(), "read from {from}");
        for (record, (o, rec)) in batch.records.iter().zip(expected) {
            assert_eq!(record.offset.get(), o);
            assert!(same(record, rec));
        }
    }

    fn check_seek(&self, input: &mut Input<'_>) {
        let t = T0 - 50 + i64::from(input.u16());
        let expected = self
            .present()
            .find(|(_, r)| r.arrival_ms >= t)
            .map_or(self.end(), |(o, _)| o);
        let found = self.shard().seek_time(t).expect("seek works");
        assert_eq!(found.get(), expected, "seek_time({t})");
    }

    fn delete_before(&mut self, input: &mut Input<'_>) {
        let cutoff = self.clock.now_ms() - i64::from(input.byte()) * 4;
        match self.shard().delete_before(cutoff) {
            Ok(deleted) => {
                trace!("delete_before {cutoff}: {deleted:?}");
                let first = self.shard().first_offset().get();
                assert!(first >= self.first);
                let gone = (first - self.first) as usize;
                assert!(gone <= self.acked.len(), "retention deleted past the end");
                // Offsets a crash left empty (`lost`) hold no record, whatever their time.
                assert!(
                    self.acked[..gone]
                        .iter()
                        .all(|r| r.lost || r.arrival_ms < cutoff),
                    "retention deleted a record newer than the cutoff"
                );
                self.acked.drain(..gone);
                self.first = first;
            }
            Err(e) => {
                assert!(
                    faults::fired(self.dir.path()),
                    "delete failed without an injected fault: {e}"
                );
                self.failed_delete_before = Some(cutoff);
                self.crash(input, &[])
            }
        }
    }

    /// Closes and reopens the shard; an armed fault may hit the open's recovery, which then
    /// counts as a crash.
    fn reopen(&mut self, input: &mut Input<'_>) {
        drop(self.shard.take());
        match Shard::open(self.dir.path(), self.options.clone()) {
            Ok(shard) => {
                self.shard = Some(shard);
                self.check_everything();
            }
            Err(e) => {
                assert!(
                    faults::fired(self.dir.path()),
                    "reopen failed without an injected fault: {e}"
                );
                self.crash(input, &[]);
            }
        }
    }

    fn check_everything(&self) {
        let found = read_all(self.shard());
        let expected: Vec<(u64, &Rec)> = self.present().collect();
        assert_eq!(found.len(), expected.len());
        for (record, (o, rec)) in found.iter().zip(expected) {
            assert_eq!(record.offset.get(), o);
            assert!(same(record, rec), "offset {} differs", record.offset);
        }
        assert_eq!(self.shard().next_offset().get(), self.end());
    }
}

/// Runs the operations the input describes. Panics (a finding) if the shard ever disagrees with
/// the model.
pub fn operations(data: &[u8]) {
    let mut input = Input(data);
    let mut h = Harness::new(&mut input);
    let mut steps = 0;
    while !input.done() && steps < 200 {
        steps += 1;
        match input.byte() % 10 {
            0..=2 => h.append(&mut input),
            3 => h.check_read(&mut input),
            4 => h.check_seek(&mut input),
            5 => {
                let after = u32::from(input.byte() % 24);
                let tear = usize::from(input.u16());
                trace!("arm after {after} ops, tear {tear}");
                faults::arm(h.dir.path(), after, tear);
            }
            6 => h.clock.advance(i64::from(input.byte())),
            7 => h.delete_before(&mut input),
            8 => {
                trace!("reopen");
                h.reopen(&mut input)
            }
            _ => {
                trace!("crash");
                h.crash(&mut input, &[])
            }
        }
    }
    // Whatever happened, a crash now keeps every acknowledged record.
    h.crash(&mut input, &[]);
    h.check_everything();
    faults::reset(h.dir.path());
    check_dir_verifies(h.dir.path());
}

/// A shard the engine wrote and recovered verifies clean, apart from what a power cut may leave
/// behind that the engine repairs on its own (torn tails, index caches).
fn check_dir_verifies(dir: &Path) {
    let problems = shardlog::log::shard::verify(dir).expect("verify runs");
    for p in &problems {
        let cache = p.path.extension().is_some_and(|e| e == "idx");
        assert!(
            cache || p.what.contains("torn"),
            "verify after recovery: {p}"
        );
    }
}
