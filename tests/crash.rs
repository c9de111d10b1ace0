//! Durability under a real crash: a child process appends and reports every acknowledged append
//! on stdout; the parent SIGKILLs it at random moments (during appends, rolls, or recovery itself),
//! reopens the shard and checks that every acknowledged record is present and intact, and that
//! nothing but the records the child tried to write is there.
//!
//! The child is this same test binary, re-run with the ignored `child_writer` test selected and
//! the directory passed in an environment variable.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use shardlog::{FlushPolicy, Offset, Shard, ShardOptions};

const DIR_ENV: &str = "SHARDLOG_CRASH_DIR";
const POLICY_ENV: &str = "SHARDLOG_CRASH_POLICY";
const MAX_BATCH: u64 = 20;
const MAX_LEN: usize = 2000;

fn options(policy: &str) -> ShardOptions {
    ShardOptions {
        segment_bytes: 64 * 1024,
        flush: match policy {
            "always" => FlushPolicy::Always,
            "group" => FlushPolicy::GroupCommit {
                interval: Duration::from_millis(1),
            },
            _ => FlushPolicy::Never,
        },
        ..ShardOptions::default()
    }
}

/// The child: appends deterministic records forever, printing `ack N` after each append returns
/// (N = records acknowledged so far). Runs only when the parent selects it.
#[test]
#[ignore = "run by the crash tests as their child process"]
fn child_writer() {
    let dir = std::env::var(DIR_ENV).expect("the parent sets the directory");
    let policy = std::env::var(POLICY_ENV).unwrap_or_default();
    let shard = Shard::open(&dir, options(&policy)).expect("child open");
    let mut rng = rand::rngs::StdRng::seed_from_u64(shard.next_offset().get());
    loop {
        let from = shard.next_offset().get();
        let to = from + rng.gen_range(1..=MAX_BATCH);
        append_range(&shard, from, to, MAX_BATCH, MAX_LEN);
        println!("ack {to}");
        std::io::stdout().flush().expect("stdout");
    }
}

fn crash_rounds(policy: &str, rounds: u32) {
    let mut rng = crash_rng(&format!("crash test ({policy})"));
    let dir = tempfile::tempdir().unwrap();
    let mut acked = 0u64;
    let mut kills_mid_run = 0;
    for round in 0..rounds {
        let envs = [
            (DIR_ENV, dir.path().display().to_string()),
            (POLICY_ENV, policy.to_string()),
        ];
        let (mut child, reader) = spawn_acking_child("child_writer", &envs);
        std::thread::sleep(Duration::from_millis(rng.gen_range(2..80)));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        let round_acked = reader.join().unwrap();
        if let Some(n) = round_acked {
            assert!(n >= acked, "acknowledgements only grow");
            acked = n;
        }
        if !status.success() {
            kills_mid_run += 1;
        }

        let shard = Shard::open(dir.path(), options(policy))
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        let stored = shard.next_offset().get();
        assert!(
            stored >= acked,
            "round {round}: {acked} records acknowledged, only {stored} survived"
        );
        assert!(
            stored <= acked + MAX_BATCH,
            "round {round}: {stored} records stored, more than the {acked} acknowledged plus one \
             batch in flight"
        );
        let all = read_all(&shard, 0);
        check_records(&all, 0, stored, MAX_LEN);
        assert_eq!(shard.first_offset(), Offset::new(0));
        // What survived counts as acknowledged from now on: the next child continues after it.
        acked = stored;
    }
    assert!(acked > 0, "the child never got to append");
    assert!(
        kills_mid_run > 0,
        "the child was never killed while running"
    );
    eprintln!("crash test ({policy}): {rounds} kills, {acked} records at the end");
}

#[test]
fn sigkill_loses_no_acknowledged_record_with_flush_always() {
    crash_rounds("always", 25);
}

#[test]
fn sigkill_loses_no_acknowledged_record_with_group_commit() {
    crash_rounds("group", 10);
}

#[test]
fn sigkill_loses_no_acknowledged_record_with_flush_never() {
    // The page cache outlives the process, so even `Never` keeps every acknowledged record
    // through a crash of the process (not of the machine).
    crash_rounds("never", 10);
}
