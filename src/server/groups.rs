//! Consumer groups over the wire (`ShardlogConsumerGroups_20261126.*`), so that workers in
//! other processes, in any language, share a stream's shards with leases and checkpoints kept by
//! the server: what the KCL keeps in DynamoDB. Not an AWS API (Kinesis has none for this); it
//! follows the same JSON conventions. A remote worker loops:
//!
//! 1. `LeaseShards` (renews its leases, takes its fair share; shards with iterators after their
//!    checkpoints),
//! 2. Kinesis `GetRecords` on each iterator, processes the records,
//! 3. `Checkpoint` with the last record's sequence number, or at a closed shard's end
//!    (`GetRecords` returned no `NextShardIterator`) `FinishShard`,
//!
//! and `ReleaseLeases` when it stops. A worker that dies loses its leases once they expire.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::context::Context;
use super::error::ApiError;
use super::protocol::{timestamp, Input, Output};
use crate::consumer::{ConsumerGroup, GroupConfig, InitialPosition};
use crate::{SequenceNumber, ShardId};

/// Longest lease a request may ask for (a day) and the shortest (100 ms).
const LEASE_MS: std::ops::RangeInclusive<i64> = 100..=86_400_000;

/// Every operation [`call`] answers (metrics label only these).
pub(crate) const OPERATIONS: [&str; 7] = [
    "LeaseShards",
    "Checkpoint",
    "FinishShard",
    "ReleaseLeases",
    "DescribeGroup",
    "ListGroups",
    "DeleteGroup",
];

/// Runs one consumer-group operation.
pub(crate) fn call(ctx: &Context, operation: &str, body: &Value) -> Result<Output, ApiError> {
    let input = Input::new(body)?;
    let reply = match operation {
        "LeaseShards" => lease_shards(ctx, &input),
        "Checkpoint" => checkpoint(ctx, &input),
        "FinishShard" => finish_shard(ctx, &input),
        "ReleaseLeases" => release_leases(ctx, &input),
        "DescribeGroup" => describe_group(ctx, &input),
        "ListGroups" => list_groups(ctx),
        "DeleteGroup" => delete_group(ctx, &input),
        other => Err(ApiError::new(
            400,
            "UnknownOperationException",
            format!("ShardlogConsumerGroups_20261126 has no operation {other}"),
        )),
    }?;
    Ok(Output::Value(reply))
}

/// The group `name`, opened (created with the request's configuration) if needed.
fn group(ctx: &Context, input: &Input<'_>, create: bool) -> Result<Arc<ConsumerGroup>, ApiError> {
    let name = input.str("GroupName")?;
    let mut open = ctx.groups.lock();
    if let Some(group) = open.get(name) {
        return Ok(Arc::clone(group));
    }
    let group = if create {
        let mut config = GroupConfig::new(input.str("StreamName")?);
        if let Some(position) = input.opt_object("InitialPosition")? {
            config.initial_position = match position.str("Type")? {
                "TRIM_HORIZON" => InitialPosition::TrimHorizon,
                "LATEST" => InitialPosition::Latest,
                "AT_TIMESTAMP" => InitialPosition::AtTimestamp {
                    ms: position.opt_timestamp_ms("Timestamp")?.ok_or_else(|| {
                        ApiError::invalid("AT_TIMESTAMP needs InitialPosition.Timestamp")
                    })?,
                },
                other => {
                    return Err(ApiError::invalid(format!(
                        "InitialPosition.Type {other:?} is not TRIM_HORIZON, LATEST or AT_TIMESTAMP"
                    )))
                }
            };
        }
        if let Some(ms) = input.opt_i64("LeaseDurationMillis")? {
            if !LEASE_MS.contains(&ms) {
                return Err(ApiError::invalid(format!(
                    "LeaseDurationMillis {ms} is outside {}..={}",
                    LEASE_MS.start(),
                    LEASE_MS.end()
                )));
            }
            config.lease_duration = Duration::from_millis(ms.unsigned_abs());
        }
        ConsumerGroup::open(Arc::clone(&ctx.store), name, config)?
    } else {
        ConsumerGroup::open_existing(Arc::clone(&ctx.store), name)?
    };
    open.insert(name.to_string(), Arc::clone(&group));
    Ok(group)
}

fn lease_shards(ctx: &Context, input: &Input<'_>) -> Result<Value, ApiError> {
    let group = group(ctx, input, true)?;
    let stream = input.str("StreamName")?;
    // (Not `describe`, which reads each shard for its lag.)
    let reads = group.stream();
    if reads != stream {
        return Err(ApiError::invalid(format!(
            "group {} reads stream {reads}, not {stream}",
            group.name()
        )));
    }
    let leased = group.lease_shards(input.str("WorkerId")?)?;
    let shards: Vec<Value> = leased
        .into_iter()
        .map(|s| json!({ "ShardId": s.shard_id, "ShardIterator": s.iterator }))
        .collect();
    Ok(json!({ "Shards": shards }))
}

fn checkpoint(ctx: &Context, input: &Input<'_>) -> Result<Value, ApiError> {
    let group = group(ctx, input, false)?;
    let worker = input.str("WorkerId")?;
    let text = input.str("SequenceNumber")?;
    let sequence_number = SequenceNumber::parse(text).ok_or_else(|| {
        crate::Error::invalid(
            "SequenceNumber",
            format!("{text:?} is not a sequence number"),
        )
    })?;
    group.checkpoint(worker, sequence_number)?;
    Ok(json!({}))
}

fn finish_shard(ctx: &Context, input: &Input<'_>) -> Result<Value, ApiError> {
    let group = group(ctx, input, false)?;
    let worker = input.str("WorkerId")?;
    let text = input.str("ShardId")?;
    let shard = ShardId::parse_loose(text)
        .ok_or_else(|| crate::Error::invalid("ShardId", format!("{text:?} is not a shard id")))?;
    group.finish_shard(worker, shard)?;
    Ok(json!({}))
}

fn release_leases(ctx: &Context, input: &Input<'_>) -> Result<Value, ApiError> {
    group(ctx, input, false)?.release(input.str("WorkerId")?)?;
    Ok(json!({}))
}

fn describe_group(ctx: &Context, input: &Input<'_>) -> Result<Value, ApiError> {
    let d = group(ctx, input, false)?.describe()?;
    let workers: Vec<Value> = d
        .workers
        .iter()
        .map(|(id, seen)| json!({ "WorkerId": id, "LastRenewed": timestamp(*seen) }))
        .collect();
    let shards: Vec<Value> = d
        .shards
        .iter()
        .map(|s| {
            json!({
                "ShardId": s.shard_id,
                "Owner": s.owner,
                "LeaseExpires": timestamp(s.lease_expires_ms),
                "Checkpoint": s.checkpoint,
                "Finished": s.finished,
                "LagRecords": s.lag_records,
                "LagMillis": s.lag_ms,
            })
        })
        .collect();
    Ok(json!({
        "GroupName": d.name,
        "StreamName": d.stream,
        "Workers": workers,
        "Shards": shards,
    }))
}

fn list_groups(ctx: &Context) -> Result<Value, ApiError> {
    let groups: Vec<Value> = ConsumerGroup::list(&ctx.store)?
        .into_iter()
        .map(|g| json!({ "GroupName": g.name, "StreamName": g.stream }))
        .collect();
    Ok(json!({ "Groups": groups }))
}

fn delete_group(ctx: &Context, input: &Input<'_>) -> Result<Value, ApiError> {
    let name = input.str("GroupName")?;
    // The server's own handle goes first; a request still using the group keeps it open.
    ctx.groups.lock().remove(name);
    ConsumerGroup::delete(&ctx.store, name)?;
    Ok(json!({}))
}
