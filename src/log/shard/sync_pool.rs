//! Waiting for several shards' syncs at once. A `PutRecords` over four shards used to wait for
//! up to four fdatasyncs one after another; here, of the shards whose sync the call would have to
//! start itself, the caller leads one and hands the others to helper threads, so it waits about
//! as long as its slowest shard. Shards another call is already syncing are waited for in turn,
//! as before: under load every shard has a sync running and a hand-off would only add wake-ups.
//!
//! The helpers are a small process-wide pool, started on demand (at most [`MAX_HELPERS`]) and
//! gone after [`IDLE_EXIT`] without work. The pool only ever speeds a call up: a caller whose jobs
//! no helper has picked up (all busy, or no thread could be started) takes them back and runs
//! them itself, so it never waits on the pool.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::Appended;

use super::{FlushPolicy, Shard};

/// Most helper threads alive at once.
const MAX_HELPERS: usize = 16;

/// How long a helper waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

impl Shard {
    /// [`Shard::make_durable`] for each `(shard, appended)` pair, the syncs running concurrently;
    /// the results in the same order. Returns once every one has returned.
    ///
    /// Only shards whose sync this call would have to lead (none running, and its records not
    /// yet durable) go to helpers: under load, another call is already syncing each shard and
    /// waiting for it in turn costs nothing extra, while a hand-off would.
    pub fn make_all_durable(pending: &[(Arc<Shard>, Appended)]) -> Vec<Result<()>> {
        let leads: Vec<usize> = (0..pending.len())
            .filter(|&i| pending[i].0.would_lead_sync(pending[i].1))
            .collect();
        if leads.len() <= 1 {
            return pending
                .iter()
                .map(|(shard, appended)| shard.make_durable(*appended))
                .collect();
        }
        let call = Arc::new(Call {
            results: Mutex::new(pending.iter().map(|_| None).collect()),
            finished: Condvar::new(),
        });
        let pool = pool();
        pool.submit(leads[1..].iter().map(|&index| Job {
            shard: Arc::clone(&pending[index].0),
            appended: pending[index].1,
            index,
            call: Arc::clone(&call),
        }));
        for (index, (shard, appended)) in pending.iter().enumerate() {
            if index == leads[0] || !leads.contains(&index) {
                call.complete(index, shard.make_durable(*appended));
            }
        }
        // Jobs no helper has started yet are run here rather than waited for.
        for job in pool.take_back(&call) {
            job.run();
        }
        call.wait()
    }

    /// Whether `make_durable(appended)` would start a sync now: the policy syncs, the records
    /// are not durable yet and no sync is running.
    fn would_lead_sync(&self, appended: Appended) -> bool {
        if self.options.flush == FlushPolicy::Never {
            return false;
        }
        let state = self.sync_state.lock().unwrap_or_else(|e| e.into_inner());
        !state.syncing && state.durable <= appended.last
    }
}

/// One shard's sync, for a helper (or its caller) to run.
struct Job {
    shard: Arc<Shard>,
    appended: Appended,
    /// Its place in the caller's results.
    index: usize,
    call: Arc<Call>,
}

impl Job {
    fn run(self) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.shard.make_durable(self.appended)
        }));
        let result = outcome.unwrap_or_else(|_| {
            Err(Error::Poisoned {
                path: self.shard.dir.clone(),
                reason: "a sync panicked".into(),
            })
        });
        self.call.complete(self.index, result);
    }
}

/// The results of one `make_all_durable` call as they arrive.
struct Call {
    results: Mutex<Vec<Option<Result<()>>>>,
    finished: Condvar,
}

impl Call {
    fn complete(&self, index: usize, result: Result<()>) {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        results[index] = Some(result);
        if results.iter().all(Option::is_some) {
            self.finished.notify_all();
        }
    }

    fn wait(&self) -> Vec<Result<()>> {
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        while !results.iter().all(Option::is_some) {
            results = self
                .finished
                .wait(results)
                .unwrap_or_else(|e| e.into_inner());
        }
        results
            .drain(..)
            .map(|r| r.expect("every result arrived"))
            .collect()
    }
}

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    helpers: usize,
    idle: usize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        work: Condvar::new(),
    })
}

impl Pool {
    /// Queues `jobs`, starting helpers for those no idle helper will take (within the cap).
    fn submit(&'static self, jobs: impl Iterator<Item = Job>) {
        let mut state = self.lock();
        let before = state.queue.len();
        state.queue.extend(jobs);
        let added = state.queue.len() - before;
        let wanted = state.queue.len().saturating_sub(state.idle);
        let starting = wanted.min(MAX_HELPERS.saturating_sub(state.helpers));
        state.helpers += starting;
        drop(state);
        for _ in 0..added {
            self.work.notify_one();
        }
        for _ in 0..starting {
            let started = std::thread::Builder::new()
                .name("shardlog-sync".into())
                .spawn(move || self.serve());
            if started.is_err() {
                // The caller runs what no helper takes.
                self.lock().helpers -= 1;
            }
        }
    }

    /// Removes the jobs of `call` that no helper has started.
    fn take_back(&self, call: &Arc<Call>) -> Vec<Job> {
        let mut state = self.lock();
        let mut mine = Vec::new();
        let mut kept = VecDeque::with_capacity(state.queue.len());
        for job in state.queue.drain(..) {
            if Arc::ptr_eq(&job.call, call) {
                mine.push(job);
            } else {
                kept.push_back(job);
            }
        }
        state.queue = kept;
        mine
    }

    /// A helper's life: run jobs until none came for [`IDLE_EXIT`].
    fn serve(&self) {
        loop {
            let mut state = self.lock();
            let job = loop {
                if let Some(job) = state.queue.pop_front() {
                    break job;
                }
                state.idle += 1;
                let (next, waited) = self
                    .work
                    .wait_timeout(state, IDLE_EXIT)
                    .unwrap_or_else(|e| e.into_inner());
                state = next;
                state.idle -= 1;
                if waited.timed_out() && state.queue.is_empty() {
                    state.helpers -= 1;
                    return;
                }
            };
            drop(state);
            job.run();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::shard::ShardOptions;
    use crate::types::NewRecord;

    fn shards(dir: &std::path::Path, count: usize) -> Vec<Arc<Shard>> {
        (0..count)
            .map(|i| {
                let options = ShardOptions {
                    flush: FlushPolicy::Always,
                    ..ShardOptions::default()
                };
                Arc::new(Shard::open(dir.join(format!("s{i}")), options).unwrap())
            })
            .collect()
    }

    fn append(shard: &Shard, n: usize) -> Appended {
        let data = vec![7u8; 100];
        let records: Vec<NewRecord<'_>> = (0..n)
            .map(|_| NewRecord {
                partition_key: b"k",
                explicit_hash_key: None,
                data: &data,
            })
            .collect();
        shard.append_unsynced(&records).unwrap()
    }

    fn durable(shard: &Shard) -> crate::types::Offset {
        shard
            .sync_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .durable
    }

    #[test]
    fn every_shard_is_durable_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards(dir.path(), 4);
        let pending: Vec<(Arc<Shard>, Appended)> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (Arc::clone(s), append(s, i + 1)))
            .collect();
        assert!(pending.iter().all(|(s, a)| s.would_lead_sync(*a)));
        let results = Shard::make_all_durable(&pending);
        assert_eq!(results.len(), 4);
        for ((shard, appended), result) in pending.iter().zip(results) {
            result.unwrap();
            assert!(durable(shard) > appended.last);
            assert!(!shard.would_lead_sync(*appended));
        }
    }

    #[test]
    fn many_concurrent_callers_all_finish_durable() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards(dir.path(), 5);
        // More callers than helpers, so some take their jobs back.
        std::thread::scope(|scope| {
            for caller in 0..(MAX_HELPERS * 2) {
                let shards = &shards;
                scope.spawn(move || {
                    for round in 0..5 {
                        let pending: Vec<(Arc<Shard>, Appended)> = shards
                            .iter()
                            .skip((caller + round) % 2)
                            .map(|s| (Arc::clone(s), append(s, 3)))
                            .collect();
                        for (result, (shard, appended)) in
                            Shard::make_all_durable(&pending).into_iter().zip(&pending)
                        {
                            result.unwrap();
                            assert!(durable(shard) > appended.last);
                        }
                    }
                });
            }
        });
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn a_failed_sync_fails_only_its_own_shard() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards(dir.path(), 3);
        let pending: Vec<(Arc<Shard>, Appended)> = shards
            .iter()
            .map(|s| (Arc::clone(s), append(s, 2)))
            .collect();
        crate::faults::arm(&dir.path().join("s1"), 0, 0);
        let results = Shard::make_all_durable(&pending);
        crate::faults::disarm(&dir.path().join("s1"));
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(results[1].is_err(), "the armed shard's sync failed");
        assert!(results[2].is_ok(), "{:?}", results[2]);
    }
}
