//! Resharding: `split_shard`, `merge_shards`, `update_shard_count` (Kinesis UNIFORM_SCALING,
//! with its scaling limits) and on-demand `autoscale`. Each change is one manifest update, so
//! a crash leaves the old topology or the new one.

use std::collections::HashMap;

use super::{not_found_shard, Stream, Topology};
use crate::error::{Error, Result};
use crate::hash_key::{shard_id, HashKeyRange, ShardId};
use crate::manifest::{Closed, ShardEntry, StreamManifest, StreamMode};

/// Kinesis: at most 10 UpdateShardCount scalings per stream in a rolling 24 hours...
pub const MAX_SCALINGS_PER_DAY: usize = 10;
/// ... and 2 in a rolling hour (applied when throughput limits are on).
pub const MAX_SCALINGS_PER_HOUR: usize = 2;

impl Stream {
    /// Splits an open shard in two at `new_starting_hash_key`: the parent closes, and two
    /// children own its keys below and from the new key.
    pub fn split_shard(&self, shard_to_split: ShardId, new_starting_hash_key: u128) -> Result<()> {
        let key = new_starting_hash_key;
        let mut topology = self.write_topology();
        let parent = self.open_entry(&topology, shard_to_split)?;
        let range = parent.hash_range;
        // Kinesis's rule: above the parent's starting hash key plus one, below its ending one.
        if key <= range.start.saturating_add(1) || key >= range.end {
            return Err(Error::invalid(
                "NewStartingHashKey",
                format!(
                    "{key} used in SplitShard() on shard {} in stream {} is not both greater \
                     than one plus the shard's StartingHashKey {} and less than the shard's \
                     EndingHashKey {}",
                    shard_id(parent.index),
                    self.name,
                    range.start,
                    range.end
                ),
            ));
        }
        self.check_open_shard_limit(&topology, 1)?;
        self.split_at(&mut topology, parent.index, key)
    }

    /// Closes open shard `index` and adds two children owning its keys below `key` and from it.
    /// Called under the exclusive topology lock; `key` lies inside the shard's range, above its
    /// start.
    fn split_at(&self, topology: &mut Topology, index: u32, key: u128) -> Result<()> {
        let range = topology
            .entry(index)
            .map(|e| e.hash_range)
            .ok_or_else(|| not_found_shard(&shard_id(index)))?;
        let now = self.context.clock.now_ms();
        let end = self.close_point(topology, index)?;
        self.update_manifest(topology, |m| {
            close(m, index, end, now);
            let low = HashKeyRange {
                start: range.start,
                end: key - 1,
            };
            add_shard(m, low, Some(index), None, now);
            add_shard(
                m,
                HashKeyRange {
                    start: key,
                    end: range.end,
                },
                Some(index),
                None,
                now,
            );
            Ok(())
        })
    }

    /// Merges two open shards with adjacent hash-key ranges into one: both close, and a child owns
    /// their keys. `shard_to_merge` becomes its parent, `adjacent_shard_to_merge` its adjacent parent.
    pub fn merge_shards(
        &self,
        shard_to_merge: ShardId,
        adjacent_shard_to_merge: ShardId,
    ) -> Result<()> {
        let mut topology = self.write_topology();
        let a = self.open_entry(&topology, shard_to_merge)?;
        let b = self.open_entry(&topology, adjacent_shard_to_merge)?;
        // As Kinesis: the adjacent shard's range must follow the first one's (given the other
        // way round, AWS refuses the pair too).
        if a.hash_range.end.checked_add(1) != Some(b.hash_range.start) {
            return Err(Error::invalid(
                "AdjacentShardToMerge",
                format!(
                    "Shards {} and {} in stream {} are not an adjacent pair of shards eligible \
                     for merging",
                    shard_id(a.index),
                    shard_id(b.index),
                    self.name
                ),
            ));
        }
        let merged = HashKeyRange {
            start: a.hash_range.start,
            end: b.hash_range.end,
        };
        let now = self.context.clock.now_ms();
        let end_a = self.close_point(&topology, a.index)?;
        let end_b = self.close_point(&topology, b.index)?;
        let (ia, ib) = (a.index, b.index);
        self.update_manifest(&mut topology, |m| {
            close(m, ia, end_a, now);
            close(m, ib, end_b, now);
            add_shard(m, merged, Some(ia), Some(ib), now);
            Ok(())
        })
    }

    /// Reshards to `target` open shards of equal hash-key ranges (Kinesis UNIFORM_SCALING), from
    /// half to double the current count. Like Kinesis, it splits shards at the new boundaries and
    /// merges the pieces, so every new shard has at most two parents; pieces merged again right
    /// away are short-lived shards that close with no records.
    pub fn update_shard_count(&self, target: u32) -> Result<()> {
        let mut topology = self.write_topology();
        let open = topology.routes.len() as u32;
        if target == 0 || target > open * 2 || target * 2 < open {
            return Err(Error::invalid(
                "TargetShardCount",
                format!(
                    "{target} must be from half ({}) to double ({}) the {open} open shards",
                    open.div_ceil(2),
                    open * 2
                ),
            ));
        }
        let targets = HashKeyRange::uniform(target);
        let current: Vec<(HashKeyRange, u32)> = topology.routes.clone();
        if current.iter().map(|(r, _)| *r).eq(targets.iter().copied()) {
            return Ok(());
        }
        let now = self.context.clock.now_ms();
        let limited = self.limits_apply(&topology.manifest);
        let mut scalings = self.scalings.lock().unwrap_or_else(|e| e.into_inner());
        const DAY_MS: i64 = 24 * 3600 * 1000;
        while scalings
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= DAY_MS)
        {
            scalings.pop_front();
        }
        if limited {
            let last_hour = scalings
                .iter()
                .filter(|&&t| now.saturating_sub(t) < DAY_MS / 24)
                .count();
            if scalings.len() >= MAX_SCALINGS_PER_DAY || last_hour >= MAX_SCALINGS_PER_HOUR {
                return Err(Error::LimitExceeded {
                    reason: format!(
                        "stream {} was rescaled {} times in the last 24 hours and {last_hour} in the last hour (at most {MAX_SCALINGS_PER_DAY} and {MAX_SCALINGS_PER_HOUR})",
                        self.name,
                        scalings.len()
                    ),
                });
            }
        }
        let mut ends = Vec::with_capacity(current.len());
        for &(_, index) in &current {
            ends.push((index, self.close_point(&topology, index)?));
        }
        self.check_open_shard_limit(&topology, target.saturating_sub(open))?;
        self.update_manifest(&mut topology, |m| {
            // Pieces: each open shard cut at the target boundaries inside it. A shard that needs
            // no cut and is exactly a target range stays as it is.
            let mut pieces: Vec<(HashKeyRange, u32)> = Vec::new();
            for (&(range, index), &(_, end)) in current.iter().zip(&ends) {
                let cuts: Vec<u128> = targets
                    .iter()
                    .map(|t| t.start)
                    .filter(|&s| s > range.start && s <= range.end)
                    .collect();
                if cuts.is_empty() {
                    pieces.push((range, index));
                    continue;
                }
                close(m, index, end, now);
                let mut rest = (range, index);
                for cut in cuts {
                    let low = add_shard(
                        m,
                        HashKeyRange {
                            start: rest.0.start,
                            end: cut - 1,
                        },
                        Some(rest.1),
                        None,
                        now,
                    );
                    let high = add_shard(
                        m,
                        HashKeyRange {
                            start: cut,
                            end: rest.0.end,
                        },
                        Some(rest.1),
                        None,
                        now,
                    );
                    if rest.1 != index {
                        close(m, rest.1, 0, now); // a piece cut again at once: it never takes records
                    }
                    pieces.push((
                        HashKeyRange {
                            start: rest.0.start,
                            end: cut - 1,
                        },
                        low,
                    ));
                    rest = (
                        HashKeyRange {
                            start: cut,
                            end: rest.0.end,
                        },
                        high,
                    );
                }
                pieces.push(rest);
            }
            // Merge the pieces of each target range, pairwise from the lowest. An old shard closes
            // at its end offset; a piece made in this update never took records. Pieces and
            // targets are both in key order, so one pass pairs them.
            let ends: HashMap<u32, u64> = ends.iter().copied().collect();
            let end_of = |index: u32| ends.get(&index).copied().unwrap_or(0);
            let mut next_piece = 0;
            for t in &targets {
                while next_piece < pieces.len() && pieces[next_piece].0.start < t.start {
                    next_piece += 1;
                }
                let first = next_piece;
                while next_piece < pieces.len() && pieces[next_piece].0.end <= t.end {
                    next_piece += 1;
                }
                let mut inside = pieces[first..next_piece].iter().copied();
                let Some(mut acc) = inside.next() else {
                    continue;
                };
                for next in inside {
                    close(m, acc.1, end_of(acc.1), now);
                    close(m, next.1, end_of(next.1), now);
                    let merged = HashKeyRange {
                        start: acc.0.start,
                        end: next.0.end,
                    };
                    acc = (merged, add_shard(m, merged, Some(acc.1), Some(next.1), now));
                }
            }
            Ok(())
        })?;
        scalings.push_back(now);
        Ok(())
    }

    fn open_entry(&self, topology: &Topology, id: ShardId) -> Result<ShardEntry> {
        let entry = topology
            .entry(id.index())
            .ok_or_else(|| not_found_shard(&id.to_string()))?;
        if entry.closed.is_some() {
            return Err(Error::ResourceInUse {
                kind: "shard",
                name: id.to_string(),
                reason: "it is closed".into(),
            });
        }
        Ok(entry.clone())
    }

    fn check_open_shard_limit(&self, topology: &Topology, more: u32) -> Result<()> {
        let open = topology.routes.len() as u32;
        if open + more > self.context.max_open_shards {
            return Err(Error::LimitExceeded {
                reason: format!(
                    "stream {} would have {} open shards; the limit is {}",
                    self.name,
                    open + more,
                    self.context.max_open_shards
                ),
            });
        }
        Ok(())
    }

    /// The end offset an open shard closes at: everything appended so far, made durable first.
    /// Called under the exclusive topology lock, so no put is in flight.
    fn close_point(&self, topology: &Topology, index: u32) -> Result<u64> {
        match topology.shards[&index].open_if_exists(&self.shard_options(&topology.manifest))? {
            Some(shard) => {
                shard.flush()?;
                Ok(shard.next_offset().get())
            }
            None => Ok(0),
        }
    }

    /// For an on-demand stream: splits, at the middle of its hash-key range, every open shard
    /// whose write rate stayed above a shard's limit over the last window. Returns how many were
    /// split. The store's background thread calls this; it can be called any time.
    pub fn autoscale(&self) -> Result<usize> {
        let mut topology = self.write_topology();
        if topology.manifest.mode != StreamMode::OnDemand {
            return Ok(0);
        }
        let now = self.context.clock.now_ms();
        let window = self.context.on_demand_window.as_millis() as i64;
        let hot: Vec<u32> = topology
            .routes
            .iter()
            .filter(|(range, index)| {
                range.end > range.start
                    && topology.shards[index].throttle().close_window(now, window) == Some(true)
            })
            .map(|&(_, index)| index)
            .collect();
        let room = self
            .context
            .max_open_shards
            .saturating_sub(topology.routes.len() as u32) as usize;
        let mut split = 0;
        for index in hot.into_iter().take(room) {
            let Some(range) = topology.entry(index).map(|e| e.hash_range) else {
                continue;
            };
            let middle = range.start + (range.end - range.start) / 2 + 1;
            self.split_at(&mut topology, index, middle)?;
            split += 1;
        }
        Ok(split)
    }
}

fn close(m: &mut StreamManifest, index: u32, end_offset: u64, now: i64) {
    // Shards are kept in strictly increasing index order (`StreamManifest::check`).
    if let Ok(at) = m.shards.binary_search_by_key(&index, |s| s.index) {
        let s = &mut m.shards[at];
        s.closed.get_or_insert(Closed {
            end_offset,
            closed_ms: now,
        });
    }
}

fn add_shard(
    m: &mut StreamManifest,
    range: HashKeyRange,
    parent: Option<u32>,
    adjacent: Option<u32>,
    now: i64,
) -> u32 {
    let index = m.next_shard_index;
    m.next_shard_index += 1;
    m.shards.push(ShardEntry {
        index,
        hash_range: range,
        parent,
        adjacent_parent: adjacent,
        created_ms: now,
        closed: None,
    });
    index
}
